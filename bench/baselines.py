"""The machine's own baselines, measured in the same run as the project's figures."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import nats
from nats.js.api import StorageType, StreamConfig

from .measure import Figure


async def asyncpg_commit_rate(database_url: str, seconds: float = 3.0) -> Figure:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, body text)")
        count, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            await connection.execute("INSERT INTO bench_commits (body) VALUES ($1)", "x")
            count += 1
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return Figure("baseline: asyncpg single-row commit, 1 connection", count / elapsed, "commits/s")


async def jetstream_publish_rate(nats_url: str, messages: int = 50_000) -> Figure:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BENCH_BASELINE", subjects=["bench.baseline"], storage=StorageType.FILE))
        payload = b"x" * 300
        started = time.perf_counter()
        for offset in range(0, messages, 1000):
            acks = [await js.publish_async("bench.baseline", payload) for _ in range(min(1000, messages - offset))]
            await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
        await js.delete_stream("BENCH_BASELINE")
    finally:
        await nc.close()
    return Figure("baseline: JetStream async publish, file, R1", messages / elapsed, "msgs/s")
