"""`python -m bench.raw_http PORT`: an HTTP/1.1 responder that does no work, for the load client's ceiling.

It answers every request (bodiless ones: GETs) with the same small JSON at once, on uvloop like the
edge, in a process of its own like the edge. Whatever rate the benchmark's client reaches against it
is the most the client can show of any server on this machine.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


class Responder(asyncio.Protocol):
    transport: asyncio.WriteTransport
    pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCP transport is not asyncio's class

    def data_received(self, data: bytes) -> None:
        requests = (self.pending + data).split(b"\r\n\r\n")
        self.pending = requests.pop()
        if requests:
            self.transport.write(ANSWER * len(requests))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port, backlog=1024)
    sys.stdout.write("listening\n")
    sys.stdout.flush()
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
