"""The responder answers many requests at once, each exactly once, and finishes them on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from shared.responder import Responder
from tests.servers import nats_server_in_scratch_dir


@pytest.fixture
def own_nats() -> Iterator[str]:
    """A server of its own: nothing another test left behind on the session's server can take a request."""
    with nats_server_in_scratch_dir() as server:
        yield server.url


async def test_requests_overlap_and_stop_answers_those_already_taken(own_nats):
    server_side = await nats.connect(own_nats)
    client = await nats.connect(own_nats)
    started = asyncio.Event()
    in_handler = 0

    async def slow_echo(body: bytes) -> bytes:
        nonlocal in_handler
        in_handler += 1
        if in_handler == 10:
            started.set()
        await asyncio.sleep(0.3)
        return body.upper()

    responder = Responder(server_side, concurrency=10)
    await responder.serve("test.echo", "q", slow_echo)
    await server_side.flush()  # the server knows the subscription before the first request: else "no responders"
    requests = [asyncio.create_task(client.request("test.echo", f"r{i}".encode(), timeout=90)) for i in range(10)]
    await asyncio.wait_for(started.wait(), 60)  # all ten are in the handler at once (a bound: busy machines are slow)
    await responder.stop()
    replies = await asyncio.gather(*requests)
    assert sorted(r.data for r in replies) == sorted(f"R{i}".encode() for i in range(10))
    await client.close()
    await server_side.close()
