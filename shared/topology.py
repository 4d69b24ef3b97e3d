"""The services, named once, and the JetStream objects they declare, written out for operators
(deploy/jetstream/).

`python -m shared.topology` rewrites those files from the code; a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .bus import dead_letter_stream_config, event_stream_config, partitioned_stream_config
from .consumer import ConsumerSettings, ProjectionConsumer
from .partitions import Partition

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "jetstream"

# Membership takes the commands and writes the MEMBERSHIP stream; each projector reads it through a
# durable consumer named after itself; the edge turns HTTP requests into the same commands and queries,
# and holds no state. `teamctl`, the development stack and the tests use these lists.
# The example of a partitioned projector written out beside them: billing over 2 partitions.
EXAMPLE_PARTITIONS = 2

COMMAND_SERVICE = "membership"
PROJECTORS = ("billing", "audit", "notifier")
EDGE_SERVICE = "web"
SERVICES = (COMMAND_SERVICE, *PROJECTORS, EDGE_SERVICE)


def _clean(config: Any) -> dict[str, Any]:
    return {key: value for key, value in config.as_dict().items() if value not in (None, [], {})}


def documents(replicas: int = 3) -> dict[str, dict[str, Any]]:
    found = {
        "stream-MEMBERSHIP.json": _clean(event_stream_config(replicas)),
        "stream-MEMBERSHIP_DLQ.json": _clean(dead_letter_stream_config(replicas)),
    }
    for name in PROJECTORS:
        settings = ConsumerSettings(durable=name, service=name)
        found[f"consumer-{name}.json"] = {"stream": "MEMBERSHIP", **_clean(ProjectionConsumer.consumer_config(settings))}
    partitioned = partitioned_stream_config(EXAMPLE_PARTITIONS, replicas)
    found[f"stream-{partitioned.name}.json"] = _clean(partitioned)
    for index in range(EXAMPLE_PARTITIONS):
        settings = ConsumerSettings.for_service("billing", Partition(EXAMPLE_PARTITIONS, index))
        found[f"consumer-{settings.durable}.json"] = {
            "stream": partitioned.name,
            **_clean(ProjectionConsumer.consumer_config(settings)),
        }
    return found


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TOPOLOGY_DIR.mkdir(parents=True, exist_ok=True)
    for filename, document in documents().items():
        (TOPOLOGY_DIR / filename).write_text(render(document))
    sys.stdout.write(f"wrote {TOPOLOGY_DIR}\n")
