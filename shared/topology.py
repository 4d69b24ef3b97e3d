"""The JetStream objects the services declare, written out for operators (deploy/jetstream/).

`python -m shared.topology` rewrites them from the code; a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .bus import dead_letter_stream_config, event_stream_config
from .consumer import ConsumerSettings, ProjectionConsumer

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "jetstream"
CONSUMERS = ("billing", "audit", "notifier")


def _clean(config: Any) -> dict[str, Any]:
    return {key: value for key, value in config.as_dict().items() if value not in (None, [], {})}


def documents(replicas: int = 3) -> dict[str, dict[str, Any]]:
    found = {
        "stream-MEMBERSHIP.json": _clean(event_stream_config(replicas)),
        "stream-MEMBERSHIP_DLQ.json": _clean(dead_letter_stream_config(replicas)),
    }
    for name in CONSUMERS:
        settings = ConsumerSettings(durable=name, service=name)
        found[f"consumer-{name}.json"] = {"stream": "MEMBERSHIP", **_clean(ProjectionConsumer.consumer_config(settings))}
    return found


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TOPOLOGY_DIR.mkdir(parents=True, exist_ok=True)
    for filename, document in documents().items():
        (TOPOLOGY_DIR / filename).write_text(render(document))
    sys.stdout.write(f"wrote {TOPOLOGY_DIR}\n")
