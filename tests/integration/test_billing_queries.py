"""Billing's queries on the wire: the in-process endpoints over real NATS and PostgreSQL, with a clock the test sets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest

from services.billing.handlers import BillingHandlers
from shared.clock import FixedClock
from shared.responder import Responder
from teamctl.client import Client
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.integration.test_billing_projection import Billing

UTC = UTC
ANCHOR = datetime(2024, 1, 31, 10, tzinfo=UTC)


@pytest.fixture
async def billing(clean_nats, database_url) -> AsyncIterator[tuple[Billing, Client]]:
    clock = FixedClock(ANCHOR)
    async with consuming(clean_nats, database_url, lambda js, pool: Billing(js, pool, clock)) as service:
        nc = await nats.connect(clean_nats)
        responder = Responder(nc)
        await BillingHandlers(service.read_model, service.consumer, service.renewals, clock).subscribe(responder)
        try:
            yield service, Client(nc)
        finally:
            await responder.stop()
            await nc.close()


async def history_applied(service: Billing, history: OrgHistory) -> None:
    for event in history.events:
        await publish(service.js, event)
    await service.applied(history.org_id, history.sequence)


async def test_the_upcoming_invoice_is_the_next_bill_across_a_month_end_from_a_jan_31_anchor(billing):
    service, client = billing
    acme = OrgHistory("acme", ANCHOR)
    added = acme.seats_added(3, datetime(2024, 2, 10, tzinfo=UTC))
    removed = acme.seats_removed(1, datetime(2024, 2, 12, tzinfo=UTC))
    await history_applied(service, acme)

    service.clock.set(datetime(2024, 2, 15, tzinfo=UTC))
    reply = await client.query("billing", "upcoming_invoice", org_id="acme")
    assert reply["ok"], reply
    invoice = reply["result"]
    assert (invoice["billing_period_start"], invoice["billing_period_end"], invoice["issued_at"]) == (
        "2024-02-29T10:00:00Z",
        "2024-03-31T10:00:00Z",
        "2024-02-29T10:00:00Z",
    )
    lines = [
        (line["kind"], line["quantity"], line["amount_cents"], line["billing_period_start"], line["billing_period_end"])
        for line in invoice["lines"]
    ]
    assert lines == [
        ("seat_proration", 3, added["data"]["charge_cents"], "2024-01-31T10:00:00Z", "2024-02-29T10:00:00Z"),
        ("seat_credit", 1, -removed["data"]["credit_cents"], "2024-01-31T10:00:00Z", "2024-02-29T10:00:00Z"),
        ("seat_renewal", 2, 2000, "2024-02-29T10:00:00Z", "2024-03-31T10:00:00Z"),
    ]
    assert invoice["total_cents"] == added["data"]["charge_cents"] - removed["data"]["credit_cents"] + 2000

    # Past the leap day's start: February's changes were on the last bill; this one is March's.
    service.clock.set(datetime(2024, 3, 1, tzinfo=UTC))
    assert await service.renewals.tick() == 1
    invoice = (await client.query("billing", "upcoming_invoice", org_id="acme"))["result"]
    assert (invoice["billing_period_start"], invoice["billing_period_end"], invoice["issued_at"]) == (
        "2024-03-31T10:00:00Z",
        "2024-04-30T10:00:00Z",
        "2024-03-31T10:00:00Z",
    )
    assert [(line["kind"], line["amount_cents"]) for line in invoice["lines"]] == [("seat_renewal", 2000)]
    assert invoice["total_cents"] == 2000


async def test_charges_come_in_pages_that_add_up_to_the_whole_ledger(billing):
    service, client = billing
    acme = OrgHistory("acme", ANCHOR)
    for n in range(25):
        acme.seats_added(1, ANCHOR + timedelta(hours=n + 1))
    await history_applied(service, acme)

    pages, cursor = [], None
    while True:
        fields = {"org_id": "acme", "limit": 10} | ({"cursor": cursor} if cursor else {})
        reply = await client.query("billing", "charges", **fields)
        assert reply["ok"], reply
        pages.append(reply["result"]["charges"])
        cursor = reply["result"]["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    every = [c["event_id"] for page in pages for c in page]
    assert every == [e["event_id"] for e in acme.events[1:]]

    whole = (await client.query("billing", "charges", org_id="acme"))["result"]
    assert len(whole["charges"]) == 25 and whole["next_cursor"] is None  # the default limit is 100


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": 10**30},
        {"limit": 1.5},
        {"cursor": "not a cursor"},
        {"cursor": "WyJjIiwxMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMCwieCJd"},  # ["c", 10**28, "x"]: overflows
        {"cursor": "WyJpIiwxNzA5MjAwODAwMDAwMDAwXQ"},  # an invoices cursor
        {"cursor": "x" * 600},
    ],
)
async def test_a_bad_page_request_is_a_validation_error(billing, fields):
    service, client = billing
    await history_applied(service, OrgHistory("acme", ANCHOR))
    reply = await client.query("billing", "charges", org_id="acme", **fields)
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply


async def test_invoices_come_in_pages_of_periods(billing):
    service, client = billing
    acme = OrgHistory("acme", ANCHOR)
    for day in (1, 35, 65):
        acme.seats_added(1, ANCHOR + timedelta(days=day))
    await history_applied(service, acme)
    service.clock.set(ANCHOR + timedelta(days=70))

    first = (await client.query("billing", "invoices", org_id="acme", limit=2))["result"]
    assert [i["billing_period_start"] for i in first["invoices"]] == ["2024-01-31T10:00:00Z", "2024-02-29T10:00:00Z"]
    rest = (await client.query("billing", "invoices", org_id="acme", limit=2, cursor=first["next_cursor"]))["result"]
    assert [i["billing_period_start"] for i in rest["invoices"]] == ["2024-03-31T10:00:00Z"]
    assert rest["next_cursor"] is None
    assert [i["status"] for i in first["invoices"] + rest["invoices"]] == ["closed", "closed", "open"]
    bad = await client.query("billing", "invoices", org_id="acme", cursor="WyJjIiwxLCJ4Il0")  # a charges cursor
    assert bad["error"]["code"] == "validation_error"


async def test_invoices_of_a_period_with_thousands_of_seat_changes_still_fit_the_bus(billing):
    """From the second review: lines were unbounded, so both invoice queries answered `internal`."""
    service, client = billing
    acme = OrgHistory("acme", ANCHOR)
    changes = 1600
    for n in range(changes // 2):
        at = datetime(2024, 2, 1, tzinfo=UTC) + timedelta(seconds=n)
        acme.seats_added(1, at)
        acme.seats_removed(1, at + timedelta(milliseconds=500))
    await history_applied(service, acme)
    service.clock.set(datetime(2024, 2, 20, tzinfo=UTC))

    upcoming = await client.query("billing", "upcoming_invoice", org_id="acme")
    assert upcoming["ok"], upcoming
    bill = upcoming["result"]
    assert (bill["line_count"], len(bill["lines"]), bill["lines_complete"]) == (changes, 500, False)
    every_charge, cursor = [], None
    while True:
        page = (await client.query("billing", "charges", org_id="acme", limit=1000, **({"cursor": cursor} if cursor else {})))[
            "result"
        ]
        every_charge += page["charges"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert bill["total_cents"] == sum(c["amount_cents"] for c in every_charge)

    invoices = await client.query("billing", "invoices", org_id="acme", limit=1000)
    assert invoices["ok"], invoices
    (february,) = [i for i in invoices["result"]["invoices"] if i["billing_period_start"] == "2024-01-31T10:00:00Z"]
    assert (february["line_count"], february["lines_complete"]) == (changes, False)
    assert february["total_cents"] == bill["total_cents"]
