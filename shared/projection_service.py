"""The lifecycle every projecting service shares: pool, schema, consumer, responder, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats

from .bus import connect, declare_streams
from .clock import Clock
from .consumer import ConsumerSettings, Projection, ProjectionConsumer, prepare
from .responder import Responder
from .settings import Settings


@dataclass
class ProjectionRuntime:
    pool: asyncpg.Pool
    nc: nats.NATS
    consumer: ProjectionConsumer
    responder: Responder
    clock: Clock
    _background: list[asyncio.Task[Any]] = field(default_factory=list)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """A loop (a scheduler) that runs until the service stops; cancelled then."""
        self._background.append(asyncio.create_task(work))


@asynccontextmanager
async def projection_runtime(
    settings: Settings, projection: Projection, service: str, clock: Clock, stopping: asyncio.Event
) -> AsyncIterator[ProjectionRuntime]:
    """Prepares the schema, then consumes the stream until `stopping` is set; stops in order."""
    await declare_streams(settings.nats_url, settings.stream_replicas)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
    nc = await connect(settings.nats_url)
    consumer = ProjectionConsumer(nc.jetstream(), pool, projection, ConsumerSettings(durable=service, service=service), clock)
    runtime = ProjectionRuntime(pool, nc, consumer, Responder(nc), clock)
    consuming = asyncio.create_task(consumer.run(stopping))
    try:
        yield runtime
    finally:
        await runtime.responder.stop()
        for task in runtime._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopping.set()
        await consuming
        await nc.flush(timeout=2)  # acks out; no drain: an idle pull subscription never drains
        await nc.close()
        await pool.close()
