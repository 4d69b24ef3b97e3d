"""NATS with JetStream, PostgreSQL and an SMTP sink, run from the installed wheels, for
`make run` and for tests."""

from shared.localstack.servers import (
    NatsClusterNode,
    NatsServer,
    PostgresServer,
    ServerStartError,
    SmtpSink,
    free_port,
    nats_cluster,
)

__all__ = [
    "NatsClusterNode",
    "NatsServer",
    "PostgresServer",
    "ServerStartError",
    "SmtpSink",
    "free_port",
    "nats_cluster",
]
