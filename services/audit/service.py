"""Composition root: the audit projection, its consumer, retention and the auditors' queries."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import nats
import structlog

from shared.bus import declare_streams
from shared.clock import SystemClock
from shared.consumer import ConsumerSettings, ProjectionConsumer, prepare
from shared.responder import Responder
from shared.settings import Settings

from .entrypoint import AuditEndpoints
from .projection import LIVE_SCHEMA, AuditProjection
from .read_model import AuditReadModel
from .retention import RetentionScheduler

PURGE_INTERVAL_SECONDS = 3600.0


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    clock = SystemClock()
    await declare_streams(settings.nats_url, settings.stream_replicas)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    projection = AuditProjection(LIVE_SCHEMA)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1)
    consumer = ProjectionConsumer(nc.jetstream(), pool, projection, ConsumerSettings(durable="audit", service="audit"), clock)
    responder = Responder(nc)
    await AuditEndpoints(AuditReadModel(pool, LIVE_SCHEMA), consumer, clock).subscribe(responder)
    consuming = asyncio.create_task(consumer.run(stopping))
    purging = asyncio.create_task(RetentionScheduler(pool, LIVE_SCHEMA, clock, PURGE_INTERVAL_SECONDS).run())
    structlog.get_logger().info("audit ready")
    try:
        await stopping.wait()
    finally:
        await responder.stop()
        purging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purging
        await consuming
        await nc.flush(timeout=2)  # acks out; no drain: an idle pull subscription never drains
        await nc.close()
        await pool.close()
