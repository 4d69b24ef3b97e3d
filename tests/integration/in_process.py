"""A projection's consumer run in the test's own process, on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import nats

from shared.bus import declare_streams
from shared.consumer import prepare

S = TypeVar("S")


@asynccontextmanager
async def consuming(nats_url: str, database_url: str, make: Callable[[Any, asyncpg.Pool], S]) -> AsyncIterator[S]:
    """`make(js, pool)` builds an object with `.consumer` and `.projection`; it consumes until the block ends."""
    await declare_streams(nats_url)
    nc = await nats.connect(nats_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    service: Any = make(nc.jetstream(), pool)
    async with pool.acquire() as connection:
        await prepare(connection, service.projection)
    stop = asyncio.Event()
    task = asyncio.create_task(service.consumer.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await task
        await pool.close()
        await nc.close()
