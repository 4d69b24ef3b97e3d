"""NATS with JetStream, PostgreSQL and an SMTP sink, run from the installed wheels, for
`make run` and for tests."""

from shared.localstack.servers import *  # noqa: F403
from shared.localstack.servers import __all__  # noqa: F401
