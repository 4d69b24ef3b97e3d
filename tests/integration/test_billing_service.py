"""Billing as a process, fed by the membership service through the stream."""

from __future__ import annotations

import time

from teamctl.client import Client
from tests.waiting import eventually

OWNER = {"type": "user", "id": "owner-1"}


async def charges_of(client: Client, org_id: str, count: int) -> list[dict]:
    async def probe():
        reply = await client.query("billing", "charges", org_id=org_id)
        return reply["result"]["charges"] if reply["ok"] and len(reply["result"]["charges"]) >= count else None

    return await eventually(probe) or []


async def new_org(client: Client) -> str:
    return (await create_org(client))["org_id"]


async def create_org(client: Client) -> dict:
    reply = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    return reply["result"]


async def test_seat_purchases_and_releases_become_charges_and_credits(billing, nc):
    client = Client(nc)
    created = await create_org(client)
    org_id = created["org_id"]
    added = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=2, accept_charge_cents=5000)
    removed = await client.command("remove_seats", org_id=org_id, actor=OWNER, quantity=1)
    assert added["ok"] and removed["ok"]

    charges = await charges_of(client, org_id, 2)
    assert [(c["kind"], c["quantity"], c["amount_cents"]) for c in charges] == [
        ("seat_proration", 2, added["result"]["charge_cents"]),
        ("seat_credit", 1, -removed["result"]["credit_cents"]),
    ]
    assert charges[0]["event_id"] == added["events"][0]

    upcoming = (await client.query("billing", "upcoming_invoice", org_id=org_id))["result"]
    renewal_cents = 1 * 1000  # one purchased seat left, at the pro plan's unit price
    assert upcoming["total_cents"] == added["result"]["charge_cents"] - removed["result"]["credit_cents"] + renewal_cents
    assert [line["kind"] for line in upcoming["lines"]] == ["seat_proration", "seat_credit", "seat_renewal"]
    assert upcoming["issued_at"] == upcoming["billing_period_start"] == created["billing_period_end"]
    assert upcoming["lines"][-1]["billing_period_start"] == created["billing_period_end"]
    assert upcoming["lines"][0]["billing_period_start"] == created["billing_period_start"]
    invoices = await client.query("billing", "invoices", org_id=org_id)
    assert [i["status"] for i in invoices["result"]["invoices"]] == ["open"]


async def test_an_unknown_organization_is_not_found_and_bad_queries_are_refused(billing, nc):
    client = Client(nc)
    assert (await client.query("billing", "charges", org_id="nobody"))["error"]["code"] == "not_found"
    refused = await client.request("billing.query.charges", b'{"org": 1}')
    assert refused["error"]["code"] == "validation_error"
    assert (await client.query("billing", "health"))["result"] == {
        "ok": True,
        "service": "billing",
        "version": (await client.query("billing", "health"))["result"]["version"],
    }


async def test_billing_killed_between_commit_and_ack_charges_once(billing, nc):
    client = Client(nc)
    org_id = await new_org(client)
    replies = []
    for _ in range(40):
        replies.append(await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=1, accept_charge_cents=5000))
        if len(replies) == 20:
            billing.kill()  # somewhere in the middle of projecting, acks and all
            billing.start()
    assert all(r["ok"] for r in replies)
    marker = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=1, accept_charge_cents=5000)
    charges = await charges_of(client, org_id, 41)  # the marker is charged after any duplicate would be
    assert sorted(c["event_id"] for c in charges) == sorted(r["events"][0] for r in [*replies, marker])


async def test_billing_stops_cleanly_and_promptly_on_sigterm(billing, nc):
    client = Client(nc)
    org_id = await new_org(client)
    await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=1, accept_charge_cents=5000)
    assert await charges_of(client, org_id, 1)
    started = time.monotonic()
    billing.stop()
    assert billing.popen.returncode == 0, billing.output()
    assert time.monotonic() - started < 5
