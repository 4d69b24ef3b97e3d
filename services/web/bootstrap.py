"""Composition root: the HTTP edge on WEB_HOST:WEB_PORT, and its health on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn

from shared import subjects
from shared.bus import connect
from shared.clock import SystemClock
from shared.contract import queries as q
from shared.requests import reply_handler
from shared.responder import Responder
from shared.settings import ConfigurationError, Settings
from shared.version import health

from .app import create_app
from .bus import PlatformBus
from .config import PlatformSignInSettings, WebSettings
from .connections import ConnectionLimits, connection_cap, guarded_protocol
from .edge import Edge
from .metrics import HttpMetrics
from .signin import open_sign_in

QUEUE_GROUP = "web"


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own lifecycle: the service's signal handlers stop it, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(own: WebSettings) -> socket.socket:
    """The edge's address, taken before anything else starts: a taken port stops the service with its name.

    TCP_NODELAY is set here, and every connection accepted inherits it: asyncio sets it only on sockets
    that name IPPROTO_TCP, which `create_server`'s does not, and without it each keep-alive response
    (written in two parts, head then body) waited for the client's delayed ACK, about 40 ms."""
    family = socket.AF_INET6 if ":" in own.host else socket.AF_INET
    try:
        listening = socket.create_server((own.host, own.port), family=family, backlog=2048)
    except OSError as error:
        raise ConfigurationError(f"cannot listen on {own.host}:{own.port} (WEB_HOST, WEB_PORT): {error.strerror}") from None
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listening


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    own = WebSettings.from_env()
    platform = PlatformSignInSettings.from_env()
    listening = listening_socket(own)
    nc = await connect(settings.nats_url)
    responder = Responder(nc)
    try:
        signin = await open_sign_in(
            nc.jetstream(), settings.server_secret, settings.public_url, own, platform, SystemClock(), settings.stream_replicas
        )
        edge = Edge(PlatformBus(nc, own.bus_timeout_seconds), signin.sessions, own, settings.public_url, signin)
        server = EmbeddedServer(
            uvicorn.Config(
                HttpMetrics(create_app(edge)),
                host=own.host,
                port=own.port,
                # httptools' C parser, not h11's Python one (docs/decisions.md), with a cap on open
                # connections and a deadline for each request to arrive (connections.py)
                http=guarded_protocol(ConnectionLimits(connection_cap(own.max_connections), own.request_read_seconds)),
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
                proxy_headers=False,
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[listening]))
        while not server.started:
            if serving.done():
                serving.result()  # the port could not be taken: raise why
                raise RuntimeError("the HTTP server stopped before it started")
            await asyncio.sleep(0.05)

        async def healthy(_: q.Health) -> object:
            return health("web")

        await responder.serve(subjects.query("web", "health"), QUEUE_GROUP, reply_handler(q.Health, healthy))
        structlog.get_logger().info("web ready", url=f"http://{own.host}:{own.port}", public_url=settings.public_url)
        await asyncio.wait([serving, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        await responder.stop()
        await nc.drain()
