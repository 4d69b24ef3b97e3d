"""The development stack: NATS with JetStream, PostgreSQL and an SMTP sink, run from the installed
wheels (the `stack` extra), for `make run` and for tests. No service imports it."""

from devstack.servers import *  # noqa: F403
from devstack.servers import __all__  # noqa: F401
