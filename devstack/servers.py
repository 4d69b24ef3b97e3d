"""The three local servers, each a child process we own by PID."""

from devstack.nats_server import NatsClusterNode, NatsServer, nats_cluster
from devstack.ports import free_port
from devstack.postgres_server import PostgresServer
from devstack.process import ServerStartError
from devstack.smtp_sink_server import SmtpSink

__all__ = [
    "NatsClusterNode",
    "NatsServer",
    "PostgresServer",
    "ServerStartError",
    "SmtpSink",
    "free_port",
    "nats_cluster",
]
