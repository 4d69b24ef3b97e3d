"""The browser tier shares the integration tier's server fixtures."""

from tests.integration.conftest import clean_nats, nc, service_env  # noqa: F401
