"""The billing projection in-process on real NATS and PostgreSQL, with a clock the test sets."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from services.billing.projection import LIVE_SCHEMA, BillingProjection
from services.billing.read_model import BillingReadModel
from services.billing.renewals import RenewalScheduler
from shared.clock import FixedClock
from shared.consumer import ConsumerSettings, ProjectionConsumer
from shared.dead_letters import parked as dead_letters
from shared.rebuild import rebuild
from shared.stream_heads import StreamHeads
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming

UTC = UTC
GRACE = timedelta(minutes=5)


class Billing:
    def __init__(self, js, pool, clock):
        self.js, self.pool, self.clock = js, pool, clock
        self.projection = BillingProjection(LIVE_SCHEMA)
        settings = ConsumerSettings(
            durable="billing", service="billing", max_attempts=2, retry_delay=0.1, gap_delay=0.1, ack_wait=2.0
        )
        self.consumer = ProjectionConsumer(js, pool, self.projection, settings, clock)
        self.renewals = RenewalScheduler(
            pool, self.projection, self.consumer.paused, clock, GRACE, interval=3600, stream_last_sequence=StreamHeads(js)
        )
        self.read_model = BillingReadModel(pool, LIVE_SCHEMA)

    async def rebuild(self):
        """`billing.admin.rebuild`'s work: replay into a shadow schema, swap it in, renew what fell due."""
        return await rebuild(
            self.js,
            self.pool,
            BillingProjection("billing_rebuild"),
            LIVE_SCHEMA,
            self.consumer.paused,
            finish=self.renewals.renew_in,
        )

    async def ledger(self) -> list[tuple]:
        rows = await self.pool.fetch(f"SELECT * FROM {LIVE_SCHEMA}.charges ORDER BY charge_id")
        return [tuple(row) for row in rows]

    async def accounts(self) -> list[tuple]:
        return [tuple(r) for r in await self.pool.fetch(f"SELECT * FROM {LIVE_SCHEMA}.accounts ORDER BY org_id")]

    async def applied(self, org_id: str, sequence: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = await self.pool.fetchval(f"SELECT last_sequence FROM {LIVE_SCHEMA}.positions WHERE org_id = $1", org_id)
            if last is not None and last >= sequence:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{org_id} did not reach sequence {sequence}")


@pytest.fixture
async def billing(clean_nats, database_url):
    clock = FixedClock(datetime(2024, 1, 31, 10, tzinfo=UTC))
    async with consuming(clean_nats, database_url, lambda js, pool: Billing(js, pool, clock)) as service:
        yield service


async def test_renewals_fall_due_by_time_across_a_month_end_and_a_leap_day(billing):
    acme = OrgHistory("acme", datetime(2024, 1, 31, 10, tzinfo=UTC))
    acme.seats_added(2, datetime(2024, 2, 10, tzinfo=UTC))
    for event in acme.events:
        await publish(billing.js, event)
    await billing.applied("acme", 2)

    billing.clock.set(datetime(2024, 2, 29, 10, 2, tzinfo=UTC))  # the period started, inside the grace
    assert await billing.renewals.tick() == 0
    billing.clock.set(datetime(2024, 4, 1, tzinfo=UTC))  # no event since February
    assert await billing.renewals.tick() == 2
    charges = (await billing.read_model.charges("acme"))["charges"]
    renewals = [
        (c["billing_period_start"], c["billing_period_end"], c["amount_cents"]) for c in charges if c["kind"] == "seat_renewal"
    ]
    assert renewals == [
        (datetime(2024, 2, 29, 10, tzinfo=UTC), datetime(2024, 3, 31, 10, tzinfo=UTC), 2000),
        (datetime(2024, 3, 31, 10, tzinfo=UTC), datetime(2024, 4, 30, 10, tzinfo=UTC), 2000),
    ]
    assert await billing.renewals.tick() == 0  # charged once, however often the scheduler runs
    invoices = (await billing.read_model.invoices("acme", billing.clock.now()))["invoices"]
    assert [(i["billing_period_start"].day, i["status"], i["total_cents"]) for i in invoices] == [
        (31, "closed", charges[0]["amount_cents"]),
        (29, "closed", 2000),
        (31, "open", 2000),
    ]


async def test_a_rebuilt_ledger_equals_the_live_one_row_for_row(billing):
    start = datetime(2024, 1, 31, 10, tzinfo=UTC)
    histories = [OrgHistory(f"org-{n}", start + timedelta(days=n)) for n in range(5)]
    for n, history in enumerate(histories):
        for k in range(6):
            at = start + timedelta(days=n + 9 * k + 1, hours=k)
            if k % 3 == 2:
                history.seats_removed(1, at)
            else:
                history.seats_added(k + 1, at)
            history.invited(at + timedelta(minutes=5))
        history.seats_removed(1, start + timedelta(days=n + 60))
    for history in histories:
        for event in history.events:
            await publish(billing.js, event)
    for history in histories:
        await billing.applied(history.org_id, history.sequence)
    billing.clock.set(start + timedelta(days=100))
    assert await billing.renewals.tick() > 0

    live_ledger, live_accounts = await billing.ledger(), await billing.accounts()
    live_indexes = await indexes(billing.pool, LIVE_SCHEMA)
    assert len(live_ledger) > 40
    report = await billing.rebuild()
    assert report.events == sum(len(h.events) for h in histories)
    assert await billing.ledger() == live_ledger
    assert await billing.accounts() == live_accounts
    assert await indexes(billing.pool, LIVE_SCHEMA) == live_indexes  # the deferred one built after the replay

    late = histories[0].seats_added(1, start + timedelta(days=100, hours=1))
    await publish(billing.js, late)
    await billing.applied("org-0", late["sequence"])  # the live consumer carries on, on the rebuilt tables
    assert len(await billing.ledger()) == len(live_ledger) + 1


async def indexes(pool, schema: str) -> list[str]:
    rows = await pool.fetch("SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname", schema)
    return [row["indexdef"] for row in rows]


async def test_a_poison_event_is_dead_lettered_and_later_events_still_apply(billing):
    acme = OrgHistory("acme", datetime(2024, 1, 31, 10, tzinfo=UTC))
    acme.seats_added(1, datetime(2024, 2, 1, tzinfo=UTC))
    poison = acme.seats_added(1, datetime(2024, 2, 2, tzinfo=UTC))
    poison["data"] = {"quantity": "many"}  # a SeatAdded billing cannot read
    acme.seats_added(1, datetime(2024, 2, 3, tzinfo=UTC))
    for event in acme.events:
        await publish(billing.js, event)
    await billing.applied("acme", 4)
    kinds = [c["kind"] for c in (await billing.read_model.charges("acme"))["charges"]]
    assert kinds == ["seat_proration", "seat_proration"]
    parked = await dead_letters(billing.js, "billing")
    assert [p["original_subject"] for p in parked] == ["membership.events.acme.SeatAdded"]


async def test_duplicates_and_out_of_order_delivery_charge_each_seat_event_once_in_order(billing):
    acme = OrgHistory("acme", datetime(2024, 1, 31, 10, tzinfo=UTC))
    first = acme.seats_added(1, datetime(2024, 2, 1, tzinfo=UTC))
    second = acme.seats_added(2, datetime(2024, 2, 2, tzinfo=UTC))
    created = acme.events[0]
    await publish(billing.js, created)
    await publish(billing.js, second)
    await publish(billing.js, first)
    await publish(billing.js, first, msg_id="redelivered-copy")
    await billing.applied("acme", 3)
    await asyncio.sleep(0.5)
    charges = (await billing.read_model.charges("acme"))["charges"]
    assert [c["event_id"] for c in charges] == [first["event_id"], second["event_id"]]
    accounts = await billing.accounts()
    assert accounts[0][4] == 3  # seats_purchased


async def test_a_charge_that_disagrees_with_the_pricing_rule_is_recorded_and_reported(billing):
    acme = OrgHistory("acme", datetime(2024, 1, 31, 10, tzinfo=UTC))
    wrong = acme.seats_added(1, datetime(2024, 2, 1, tzinfo=UTC), charge_cents=1)
    for event in acme.events:
        await publish(billing.js, event)
    await billing.applied("acme", 2)
    charges = (await billing.read_model.charges("acme"))["charges"]
    assert charges[0]["amount_cents"] == 1
    mismatches = await billing.pool.fetch(f"SELECT event_id, recorded_cents, expected_cents FROM {LIVE_SCHEMA}.mismatches")
    assert [(m["event_id"], m["recorded_cents"]) for m in mismatches] == [(wrong["event_id"], 1)]
    assert mismatches[0]["expected_cents"] > 1
