"""What deploy/ says matches what the code declares, and the NATS configurations parse."""

import subprocess
import sys
from pathlib import Path

import pytest

from shared.topology import TOPOLOGY_DIR, documents, render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_jetstream_definitions_in_deploy_match_the_code():
    for filename, document in documents().items():
        assert (TOPOLOGY_DIR / filename).read_text() == render(document), f"{filename} is stale: run python -m shared.topology"


@pytest.mark.parametrize("config", ["single.conf", "cluster.conf"])
def test_the_nats_configurations_parse(config):
    nats_server = Path(sys.executable).parent / "nats-server"
    checked = subprocess.run(
        [str(nats_server), "-c", str(DEPLOY / "nats" / config), "-t"],
        capture_output=True,
        text=True,
        env={"SERVER_NAME": "nats-0"},
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
