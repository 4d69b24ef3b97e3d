"""Composition root: the billing projection, its consumer, the renewal scheduler and the queries."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import asyncpg
import nats
import structlog

from shared.bus import declare_streams
from shared.clock import SystemClock
from shared.consumer import ConsumerSettings, ProjectionConsumer, prepare
from shared.responder import Responder
from shared.settings import Settings

from .entrypoint import BillingEndpoints
from .projection import LIVE_SCHEMA, BillingProjection
from .read_model import BillingReadModel
from .renewals import RenewalScheduler


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    clock = SystemClock()
    await declare_streams(settings.nats_url, settings.stream_replicas)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    projection = BillingProjection(LIVE_SCHEMA)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1)
    consumer = ProjectionConsumer(
        nc.jetstream(), pool, projection, ConsumerSettings(durable="billing", service="billing"), clock
    )
    renewals = RenewalScheduler(
        pool,
        projection,
        consumer.paused,
        clock,
        timedelta(seconds=settings.renewal_grace_seconds),
        settings.renewal_interval_seconds,
    )
    responder = Responder(nc)
    await BillingEndpoints(BillingReadModel(pool, LIVE_SCHEMA), consumer, renewals, clock).subscribe(responder)
    consuming = asyncio.create_task(consumer.run(stopping))
    renewing = asyncio.create_task(renewals.run())
    structlog.get_logger().info("billing ready")
    try:
        await stopping.wait()
    finally:
        await responder.stop()
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        await consuming
        await nc.flush(timeout=2)  # acks out; no drain: an idle pull subscription never drains
        await nc.close()
        await pool.close()
