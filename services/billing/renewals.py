"""Renewals driven by time: a period that has started is charged whether or not an event comes.

The scheduler renews an organization's period starting at S only when both hold:
- S is more than `grace` ago, so that a seat change decided just before S has had time to reach
  the stream;
- billing has applied every event the stream holds for that organization, so that the renewal is
  priced from the seat count as of S in event order, and never from a backlog not yet consumed
  (billing down across S while seats changed).

An event from before S that reaches the stream later still (membership's relay held up past the
grace) re-prices the renewal when it is applied: see `ledger.record`. Either way the live ledger
ends equal to a rebuild's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import asyncpg
import structlog

from shared import live_schema
from shared.clock import Clock
from shared.periodic import every

from .projection import BillingProjection

log = structlog.get_logger()

LastSequence = Callable[[str], Awaitable[int]]


class RenewalScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: BillingProjection,
        exclusive: Callable[[], AbstractAsyncContextManager[None]],
        clock: Clock,
        grace: timedelta,
        interval: float,
        stream_last_sequence: LastSequence,
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.exclusive = exclusive
        self.clock = clock
        self.grace = grace
        self.interval = interval
        self.stream_last_sequence = stream_last_sequence

    def cutoff(self) -> datetime:
        return self.clock.now() - self.grace

    async def run(self, stop: asyncio.Event) -> None:
        """`tick` now and every `interval` seconds, until `stop` is set."""
        await every(self.interval, self.tick, stop, failed="renewal run failed; trying again later")

    async def tick(self) -> int:
        """Charges every renewal due by now of the organizations caught up with the stream.

        With the consumer paused, so the two never interleave, and under the live schema's lock, so a
        rebuild's swap on another instance does not drop it."""
        cutoff = self.cutoff()
        async with self.exclusive(), self.pool.acquire() as connection, live_schema.writing(connection, self.projection.schema):
            due = await self.projection.due(connection, cutoff)
            ready = [org_id for org_id, applied in due.items() if await self.stream_last_sequence(org_id) <= applied]
            charged = await self.projection.renew(connection, cutoff, ready) if ready else 0
        if len(ready) < len(due):
            log.info("renewals wait for events still to apply", organizations=len(due) - len(ready))
        if charged:
            log.info("renewals charged", count=charged)
        return charged

    async def renew_in(self, connection: asyncpg.Connection, projection: BillingProjection) -> None:
        """For a rebuild, caught up with the stream's end: the same renewals, into the rebuilt tables."""
        await projection.renew(connection, self.cutoff())
