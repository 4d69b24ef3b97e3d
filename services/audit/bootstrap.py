"""Composition root: the audit projection, retention and the auditors' queries."""

from __future__ import annotations

import asyncio

import structlog

from shared.clock import SystemClock
from shared.partitions import Partition
from shared.projector import projection_runtime
from shared.settings import Settings
from shared.stream_heads import StreamHeads

from .handlers import AuditHandlers
from .projection import LIVE_SCHEMA, AuditProjection
from .read_model import AuditReadModel
from .retention import RetentionScheduler


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    async with projection_runtime(
        settings, AuditProjection(LIVE_SCHEMA), "audit", SystemClock(), stopping, Partition.from_env()
    ) as runtime:
        handlers = AuditHandlers(
            AuditReadModel(runtime.pool, LIVE_SCHEMA, StreamHeads(runtime.consumer.js)), runtime.consumer, runtime.clock
        )
        await handlers.subscribe(runtime.responder)
        runtime.in_background(RetentionScheduler(runtime.pool, LIVE_SCHEMA, runtime.clock).run(stopping))
        structlog.get_logger().info("audit ready")
        await stopping.wait()
