"""`BatchPull` on a real NATS server: batches of a durable consumer in stream order, and a fetch under
way when the server goes down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from devstack import NatsServer, free_port
from shared.pull import BatchPull


async def a_stream(js: nats.js.JetStreamContext, name: str, messages: int) -> None:
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    for n in range(messages):
        await js.publish(f"{name}.org{n % 3}", str(n).encode())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.integers(0, 40), batches=st.lists(st.integers(1, 12), min_size=1, max_size=5))
def test_batches_cover_the_stream_once_in_order(nats_url: str, messages: int, batches: list[int]) -> None:
    async def scenario() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        name = f"PULL{free_port()}"
        try:
            await a_stream(js, name, messages)
            pull = BatchPull(nc, name, "reader")
            await pull.start()
            seen: list[int] = []
            for size in batches * (messages + 1):
                if len(seen) == messages:
                    break
                batch = await pull.fetch(size, timeout=2.0)
                assert 0 < len(batch) <= size
                for message in batch:
                    await message.ack()
                seen += [int(message.data) for message in batch]
            assert seen == list(range(messages))
            assert await pull.fetch(batches[0], timeout=0.2) == []  # nothing left: the request expires
            await pull.stop()
        finally:
            await js.delete_stream(name)
            await nc.close()

    asyncio.run(scenario())


def test_a_fetch_under_way_when_nats_restarts_ends_and_the_next_ones_deliver(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", free_port())
    server.start()

    async def scenario() -> None:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await a_stream(js, "RESTART", 3)
        pull = BatchPull(nc, "RESTART", "reader")
        await pull.start()
        seen = [int(message.data) for message in await pull.fetch(10, timeout=2.0)]
        assert seen == [0, 1, 2]  # not acked: they come again after ack_wait, not before
        waiting = asyncio.create_task(pull.fetch(10, timeout=3.0))  # lingers: the consumer has nothing now
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        interrupted = await waiting  # ends at its timeout at the latest, whatever the server did
        assert all(int(message.data) >= 3 for message in interrupted)
        after = [int(message.data) for message in interrupted]
        for n in range(3, 6):
            await js.publish("RESTART.org0", str(n).encode())
        while sorted(set(after)) != [3, 4, 5]:
            try:
                after += [int(message.data) for message in await pull.fetch(10, timeout=2.0)]
            except Exception:  # the JetStream API may still be starting
                await asyncio.sleep(0.1)
        assert after == [3, 4, 5]
        await pull.stop()
        await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
