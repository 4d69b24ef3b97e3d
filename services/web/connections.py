"""Guards on the edge's connections, which uvicorn leaves open-ended: a cap on how many are open, and
a deadline for a request to arrive whole (its headers and its body). A client that opens thousands
of silent connections, or sends half a request and waits, is closed instead of holding a file
descriptor and a slot for ever. A proxy in front may guard more; the edge does not rely on one."""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 4096  # well below the process's file limit: past it, a new one is closed at once
    request_read_seconds: float = 15.0  # from a connection's first byte (or a request's) to its body's end


# Descriptors kept for everything else the process opens: NATS, logs, the metrics server.
RESERVED_DESCRIPTORS = 256


def connection_cap(configured: int) -> int:
    """The configured cap, lowered to what the process's file limit leaves room for."""
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft_limit - RESERVED_DESCRIPTORS))


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, with the cap (idle between requests, uvicorn's own keep-alive
    timeout closes a connection) and the read deadline (armed when a connection opens and when a
    request begins, disarmed when the request's body is complete)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _admitted = False
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                transport.abort()
                return
            self._admitted = True
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.request_read_seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
