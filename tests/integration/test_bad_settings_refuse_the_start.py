"""A whole-number setting a service cannot use stops it at start: one line naming the setting, exit 78,
before any connection; never a traceback, however hostile the value."""

import pytest

from shared.lifecycle import EXIT_MISCONFIGURED
from shared.topology import PROJECTORS, SERVICES
from tests.integration.test_devstack_secret import start_service

pytestmark = pytest.mark.integration

SECRET = "a-server-secret-long-enough-for-any-service-0123456789"
# METRICS_PORT=0 in each: the default ports may be taken by a stack running beside the tests


@pytest.mark.parametrize("service", PROJECTORS)
def test_a_projector_given_a_linger_that_is_not_whole_milliseconds_refuses_to_start(service: str) -> None:
    refused = start_service(service, SERVER_SECRET=SECRET, METRICS_PORT="0", PROJECTION_LINGER_MS="20ms")

    assert refused.returncode == EXIT_MISCONFIGURED, refused.stderr[-800:]
    assert f"{service}: refusing to start: PROJECTION_LINGER_MS must be a whole number, not '20ms'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_linger_of_thousands_of_digits_is_refused_in_one_short_line() -> None:
    """int() itself refuses more than 4,300 digits, with a ValueError of its own."""
    refused = start_service("billing", SERVER_SECRET=SECRET, METRICS_PORT="0", PROJECTION_LINGER_MS="0" * 4301)

    assert refused.returncode == EXIT_MISCONFIGURED, refused.stderr[-800:]
    assert "refusing to start: PROJECTION_LINGER_MS must be a whole number" in refused.stderr
    assert "(4301 characters)" in refused.stderr and "0" * 100 not in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_given_stream_replicas_it_cannot_read_refuses_to_start(service: str) -> None:
    refused = start_service(service, SERVER_SECRET=SECRET, METRICS_PORT="0", STREAM_REPLICAS="abc")

    assert refused.returncode == EXIT_MISCONFIGURED, refused.stderr[-800:]
    assert f"{service}: refusing to start: STREAM_REPLICAS must be a whole number, not 'abc'" in refused.stderr
    assert "Traceback" not in refused.stderr
