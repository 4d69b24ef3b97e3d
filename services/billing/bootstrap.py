"""Composition root: the billing projection, its renewal scheduler and the queries."""

from __future__ import annotations

import asyncio

import structlog

from shared.clock import SystemClock
from shared.partitions import Partition
from shared.projector import projection_runtime
from shared.settings import Settings
from shared.stream_heads import StreamHeads

from .config import BillingSettings
from .handlers import BillingHandlers
from .projection import LIVE_SCHEMA, BillingProjection
from .read_model import BillingReadModel
from .renewals import RenewalScheduler


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    own = BillingSettings.from_env()
    projection = BillingProjection(LIVE_SCHEMA)
    async with projection_runtime(settings, projection, "billing", SystemClock(), stopping, Partition.from_env()) as runtime:
        renewals = RenewalScheduler(
            runtime.pool,
            projection,
            runtime.consumer.paused,
            runtime.clock,
            own.renewal_grace,
            own.renewal_interval_seconds,
            StreamHeads(runtime.consumer.js),
        )
        handlers = BillingHandlers(BillingReadModel(runtime.pool, LIVE_SCHEMA), runtime.consumer, renewals, runtime.clock)
        await handlers.subscribe(runtime.responder)
        runtime.in_background(renewals.run(stopping))
        structlog.get_logger().info("billing ready")
        await stopping.wait()
