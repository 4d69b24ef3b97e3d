"""Renewals across billing's downtime, on real NATS and PostgreSQL with a clock the test sets.

The rule: the renewal of the period starting at S bills the seats purchased after exactly the
events with `occurred_at < S`, however late billing sees them. The proof is a rebuild: the live
ledger must equal one replayed from the stream, row for row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
import pytest

import shared.rebuild
from services.billing.projection import LIVE_SCHEMA
from shared.bus import declare_streams
from shared.clock import FixedClock
from shared.consumer import prepare
from tests.integration.histories import OrgHistory, publish
from tests.integration.test_billing_projection import Billing

UTC = UTC
ANCHOR = datetime(2024, 1, 31, 10, tzinfo=UTC)
LEAP_DAY_START = datetime(2024, 2, 29, 10, tzinfo=UTC)  # period 1 of a Jan 31 anchor
MARCH_START = datetime(2024, 3, 31, 10, tzinfo=UTC)


class StoppableBilling(Billing):
    """Billing whose consumer the test stops and starts: the process being down, then up."""

    def __init__(self, js, pool, clock):
        super().__init__(js, pool, clock)
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.consumer.run(self._stop))

    async def stop(self) -> None:
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await self._task
            self._task = None

    async def renewals_charged(self, org_id: str) -> list[tuple[datetime, int, int]]:
        rows = await self.pool.fetch(
            f"SELECT billing_period_start, quantity, amount_cents FROM {LIVE_SCHEMA}.charges "
            "WHERE org_id = $1 AND kind = 'seat_renewal' ORDER BY billing_period_start",
            org_id,
        )
        return [tuple(row) for row in rows]

    async def rebuilt_equals_live(self) -> None:
        live_ledger, live_accounts = await self.ledger(), await self.accounts()
        await self.rebuild()
        assert await self.ledger() == live_ledger
        assert await self.accounts() == live_accounts


@asynccontextmanager
async def stoppable_billing(nats_url: str, database_url: str, clock: FixedClock) -> AsyncIterator[StoppableBilling]:
    await declare_streams(nats_url)
    nc = await nats.connect(nats_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    billing = StoppableBilling(nc.jetstream(), pool, clock)
    async with pool.acquire() as connection:
        await prepare(connection, billing.projection)
    try:
        yield billing
    finally:
        await billing.stop()
        await pool.close()
        await nc.close()


@pytest.fixture
async def billing(clean_nats, database_url):
    async with stoppable_billing(clean_nats, database_url, FixedClock(ANCHOR)) as service:
        yield service


async def test_billing_down_across_a_period_start_while_seats_change_renews_what_a_rebuild_renews(billing):
    acme = OrgHistory("acme", ANCHOR)
    acme.seats_added(2, datetime(2024, 2, 10, tzinfo=UTC))
    for event in acme.events:
        await publish(billing.js, event)
    billing.start()
    await billing.applied("acme", 2)
    await billing.stop()  # billing goes down before the period start

    # Seats change while billing is down: one change just before the start, one after it.
    for event in (
        acme.seats_added(3, LEAP_DAY_START - timedelta(minutes=1)),
        acme.seats_removed(1, LEAP_DAY_START + timedelta(minutes=1)),
    ):
        await publish(billing.js, event)
    billing.clock.set(LEAP_DAY_START + timedelta(hours=1))  # well past the grace

    # Billing comes back up; its scheduler happens to run before the consumer has caught up.
    assert await billing.renewals.tick() == 0
    billing.start()
    await billing.applied("acme", 4)
    await billing.renewals.tick()

    # 2 + 3 seats bought before the start; the removal after it shows in the next renewal only.
    assert await billing.renewals_charged("acme") == [(LEAP_DAY_START, 5, 5000)]
    await billing.rebuilt_equals_live()


async def test_a_seat_change_from_before_a_renewed_start_that_arrives_late_reprices_the_renewals(billing):
    acme = OrgHistory("acme", ANCHOR)
    acme.seats_added(2, datetime(2024, 2, 10, tzinfo=UTC))
    for event in acme.events:
        await publish(billing.js, event)
    billing.start()
    await billing.applied("acme", 2)

    billing.clock.set(datetime(2024, 4, 1, tzinfo=UTC))
    assert await billing.renewals.tick() == 2  # caught up with the stream: two periods at 2 seats
    assert await billing.renewals_charged("acme") == [(LEAP_DAY_START, 2, 2000), (MARCH_START, 2, 2000)]

    # Decided a minute before the leap-day start, held up in membership's relay for a month.
    late = acme.seats_added(3, LEAP_DAY_START - timedelta(minutes=1))
    await publish(billing.js, late)
    await billing.applied("acme", late["sequence"])
    assert await billing.renewals_charged("acme") == [(LEAP_DAY_START, 5, 5000), (MARCH_START, 5, 5000)]

    after = acme.seats_removed(1, datetime(2024, 4, 2, tzinfo=UTC))
    await publish(billing.js, after)
    await billing.applied("acme", after["sequence"])
    await billing.rebuilt_equals_live()


async def test_a_rebuild_over_many_replay_batches_equals_the_live_ledger_across_downtime_spanning_a_period_start(
    billing, monkeypatch
):
    """Replay batches of 3 events: the next batch is fetched while one is written (`Replay._take_next`),
    so a prefetched batch dropped or applied twice shows as a ledger the rebuild does not reproduce."""
    monkeypatch.setattr(shared.rebuild, "REPLAY_BATCH", 3)
    histories = [OrgHistory(f"org-{n}", ANCHOR + timedelta(hours=n)) for n in range(3)]
    for history in histories:
        for day in range(1, 8):
            history.seats_added(day % 3 + 1, datetime(2024, 2, day, 12, tzinfo=UTC))
    for history in histories:
        for event in history.events:
            await publish(billing.js, event)
    billing.start()
    for history in histories:
        await billing.applied(history.org_id, history.sequence)
    await billing.stop()  # down across the period start

    for history in histories:
        for at in (LEAP_DAY_START - timedelta(minutes=2), LEAP_DAY_START + timedelta(hours=5)):
            await publish(billing.js, history.seats_added(1, at))
        await publish(billing.js, history.seats_removed(1, LEAP_DAY_START + timedelta(hours=6)))
    billing.clock.set(LEAP_DAY_START + timedelta(days=1))
    billing.start()
    for history in histories:
        await billing.applied(history.org_id, history.sequence)
    await billing.renewals.tick()

    live_ledger, live_accounts = await billing.ledger(), await billing.accounts()
    assert sum(1 for row in live_ledger if "seat_renewal" in row) == len(histories)
    report = await billing.rebuild()
    assert report.events == sum(len(h.events) for h in histories)
    assert await billing.ledger() == live_ledger
    assert await billing.accounts() == live_accounts
