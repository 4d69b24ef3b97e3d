"""A service started without a usable SERVER_SECRET refuses to start, says why, and never prints the secret."""

import os
import subprocess
import sys

import pytest

from shared.topology import SERVICES
from tests.services_under_test import REPO

pytestmark = pytest.mark.integration


def start_service(name: str, **secret: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in ("SERVER_SECRET", "SERVER_SECRET_FILE")}
    # Nothing listens here: a service that got past its settings would fail later, and differently.
    environment.update(NATS_URL="nats://127.0.0.1:9", DATABASE_URL="postgresql://nobody@127.0.0.1:9/none", **secret)
    return subprocess.run(
        [sys.executable, "-m", f"services.{name}"],
        cwd=REPO,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_without_a_server_secret_refuses_to_start(service: str) -> None:
    refused = start_service(service)

    assert refused.returncode != 0
    assert f"{service}: refusing to start: SERVER_SECRET is not set" in refused.stderr


def test_a_service_with_a_weak_server_secret_refuses_to_start_without_printing_it() -> None:
    weak = "hunter2-hunter2-hunter2"

    refused = start_service("membership", SERVER_SECRET=weak)

    assert refused.returncode != 0
    assert "too short" in refused.stderr
    assert weak not in refused.stderr + refused.stdout
