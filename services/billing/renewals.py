"""Renewals driven by time: a period that has started is charged whether or not an event comes.

A period's renewal waits `grace` after its start, so that a seat change decided just before the
start, and still on its way through the stream, is counted in it: live and rebuilt ledgers agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import asyncpg
import structlog

from shared.clock import Clock

from .projection import BillingProjection

log = structlog.get_logger()


class RenewalScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: BillingProjection,
        exclusive: Callable[[], AbstractAsyncContextManager[None]],
        clock: Clock,
        grace: timedelta,
        interval: float,
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.exclusive = exclusive
        self.clock = clock
        self.grace = grace
        self.interval = interval

    def cutoff(self) -> datetime:
        return self.clock.now() - self.grace

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("renewal run failed; trying again later")
            await asyncio.sleep(self.interval)

    async def tick(self) -> int:
        """Charges every renewal due by now; with the consumer paused, so the two never interleave."""
        async with self.exclusive():
            async with self.pool.acquire() as connection, connection.transaction():
                charged = await self.projection.renew(connection, self.cutoff())
        if charged:
            log.info("renewals charged", count=charged)
        return charged

    async def renew_in(self, connection: asyncpg.Connection, projection: BillingProjection) -> None:
        """For a rebuild: the same renewals, into the rebuilt tables."""
        await projection.renew(connection, self.cutoff())
