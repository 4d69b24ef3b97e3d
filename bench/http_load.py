"""A cheap HTTP/1.1 client for load: one keep-alive connection, one request at a time, the request's
bytes written as given and the response read by its Content-Length (or chunks), nothing else.

httpx costs far more per request than the edge's own work (a 628 req/s floor for `GET /healthz` with
16 httpx clients on this machine), so a benchmark through it measures httpx. This client's ceiling is
measured in the same run against `bench.raw_http`, a responder that does no work at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
CHUNKED = b"\r\ntransfer-encoding: chunked"


class HttpFailed(Exception):
    """The server closed the connection or answered what this client cannot read."""


@dataclass
class HttpConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: bytes

    @classmethod
    async def open(cls, base_url: str) -> HttpConnection:
        address = urlsplit(base_url)
        assert address.hostname is not None and address.port is not None, base_url
        reader, writer = await asyncio.open_connection(address.hostname, address.port)
        return cls(reader, writer, f"{address.hostname}:{address.port}".encode())

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
        """A request's bytes, to send as often as wanted with `send`."""
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host]
        lines += [f"{name}: {value}".encode() for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}".encode())
        return b"\r\n".join(lines) + HEAD_END + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """The response's status and body."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(HEAD_END)
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.find(CONTENT_LENGTH)
            if at >= 0:
                length = int(lowered[at + len(CONTENT_LENGTH) : lowered.index(b"\r\n", at + 2)])
                return status, await self.reader.readexactly(length)
            if CHUNKED in lowered:
                return status, await self._chunks()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as error:
            raise HttpFailed(str(error)) from None
        raise HttpFailed(f"a response with neither Content-Length nor chunks: {head[:200]!r}")

    async def _chunks(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)
            body += chunk[:-2]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
