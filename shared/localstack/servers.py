"""The three local servers, each a child process we own by PID."""

from shared.localstack.nats_server import NatsClusterNode, NatsServer, nats_cluster
from shared.localstack.ports import free_port
from shared.localstack.postgres_server import PostgresServer
from shared.localstack.process import ServerStartError
from shared.localstack.smtp_sink_server import SmtpSink

__all__ = [
    "NatsClusterNode",
    "NatsServer",
    "PostgresServer",
    "ServerStartError",
    "SmtpSink",
    "free_port",
    "nats_cluster",
]
