"""Composition root: the delivery projection and its consumer, the sender, and the queries."""

from __future__ import annotations

import asyncio

import structlog

from shared import telemetry
from shared.clock import SystemClock
from shared.partitions import Partition
from shared.projector import projection_runtime
from shared.settings import Settings

from .config import NotifierSettings
from .deliveries import Status
from .handlers import NotifierHandlers
from .mail import from_header
from .projection import LIVE_SCHEMA, NotifierProjection
from .read_model import NotifierReadModel
from .sender import Sender
from .smtp import Mailer, parse_smtp_url


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    notifier_settings = NotifierSettings.from_env()
    from_header(notifier_settings.mail_from)  # a MAIL_FROM that is not one From header stops the start
    smtp_url = parse_smtp_url(settings.smtp_url)
    projection = NotifierProjection(LIVE_SCHEMA)
    async with projection_runtime(settings, projection, "notifier", SystemClock(), stopping, Partition.from_env()) as runtime:
        sender = Sender(
            runtime.pool,
            runtime.consumer.js,
            LIVE_SCHEMA,
            Mailer(smtp_url, notifier_settings.smtp_timeout_seconds),
            notifier_settings,
            runtime.clock,
            public_url=settings.public_url,
            server_secret=settings.server_secret,
            database_url=settings.database_url,
        )
        read_model = NotifierReadModel(runtime.pool, LIVE_SCHEMA)
        await NotifierHandlers(read_model, runtime.consumer, sender).subscribe(runtime.responder)
        runtime.in_background(telemetry.sample("notifier", stopping, telemetry.deliveries_probe(read_model.counts, list(Status))))
        # Not a background task of the runtime (those are cancelled at stop): a send in progress
        # is settled before the service stops, so a clean stop never leaves a row in `sending`.
        sending = asyncio.create_task(sender.run(stopping))
        structlog.get_logger().info("notifier ready", smtp=smtp_url.redacted(), public_url=settings.public_url)
        try:
            await stopping.wait()
        finally:
            await sending
