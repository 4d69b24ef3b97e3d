"""Writers of a live projection outside its batches (an operator's retry of a failed email, the
dead-letter mark, billing's renewals, audit's retention purge) wait for a rebuild's swap instead of
writing into the schema it drops. Found by the third review: each ran straight through the swap's lock;
the operator's retry answered "retried" and the delivery was `failed` again after the swap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.audit.projection import AuditProjection
from services.audit.retention import RetentionScheduler
from services.billing.projection import BillingProjection
from services.billing.renewals import RenewalScheduler
from services.notifier.handlers import carry_over
from services.notifier.projection import NotifierProjection
from services.notifier.store import DeliveryStore, NewDelivery
from shared.clock import FixedClock
from shared.consumer import prepare
from shared.live_schema import lock_for_swap
from shared.rebuild import _swap

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
INVITED = NewDelivery("ev-1", "acme", "inv-1", "invited", "a@example.com", "Acme", "owner", NOW + timedelta(days=7), NOW, 2)


async def still_waiting(task: asyncio.Task) -> bool:
    """Whether `task` is blocked (on the swap's lock), after giving it the chance to finish."""
    for _ in range(20):
        await asyncio.sleep(0.05)
        if task.done():
            return False
    return True


async def test_an_operators_retry_during_a_notifier_swap_waits_for_it_and_lands_in_the_rebuilt_log(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        async with pool.acquire() as connection:
            await prepare(connection, NotifierProjection("notifier"))
            await DeliveryStore("notifier").add(connection, INVITED)
            await connection.execute("UPDATE notifier.deliveries SET status = 'failed', last_error = '550 no'")
            shadow = NotifierProjection("notifier_rebuild")
            await prepare(connection, shadow)
            await shadow.deliveries.add(connection, INVITED)  # the replay records it pending

        async def operators_retry() -> bool:  # served by another instance
            async with pool.acquire() as other:
                return await DeliveryStore("notifier").retry_failed(other, "ev-1", NOW)

        async with pool.acquire() as swap, swap.transaction():
            await lock_for_swap(swap, "notifier")  # as rebuild() does, before the final catch-up
            await carry_over(swap, shadow)  # the live state ('failed') copied into the shadow
            retry = asyncio.create_task(operators_retry())
            assert await still_waiting(retry)
            await _swap(swap, "notifier_rebuild", "notifier")
        assert await retry
        assert await pool.fetchval("SELECT status FROM notifier.deliveries WHERE event_id = 'ev-1'") == "pending"
    finally:
        await pool.close()


async def waits_for_a_swap(pool: asyncpg.Pool, schema: str, write: Callable[[], Awaitable[object]]) -> bool:
    async with pool.acquire() as swap, swap.transaction():
        await lock_for_swap(swap, schema)
        task = asyncio.create_task(write())
        waited = await still_waiting(task)
    await task
    return waited


async def test_billing_renewals_and_audit_retention_wait_for_a_swap(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=3, max_size=6)
    try:
        async with pool.acquire() as connection:
            await prepare(connection, BillingProjection("billing"))
            await prepare(connection, AuditProjection("audit"))

        async def caught_up(org_id: str) -> int:
            return 0

        clock = FixedClock(NOW)
        renewals = RenewalScheduler(
            pool, BillingProjection("billing"), contextlib.nullcontext, clock, timedelta(minutes=5), 60.0, caught_up
        )
        assert await waits_for_a_swap(pool, "billing", renewals.tick)
        assert await waits_for_a_swap(pool, "audit", RetentionScheduler(pool, "audit", clock).purge)
    finally:
        await pool.close()
