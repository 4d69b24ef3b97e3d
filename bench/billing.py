"""Billing: rebuild throughput over a synthetic MEMBERSHIP stream, and live projection lag under load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import nats

from shared import pricing, subjects
from shared.contract.common import Actor
from shared.contract.events import SCHEMA_VERSION, Envelope, OrganizationCreated, SeatAdded
from teamctl.client import Client

from .measure import Figure, Latencies
from .streams import publish_fresh

OWNER = {"type": "user", "id": "bench-owner"}
_encoder = msgspec.json.Encoder()


# --- rebuild throughput ---------------------------------------------------------------------------


def synthetic_events(orgs: int, seats_per_org: int, now: datetime) -> Iterator[tuple[str, str, bytes]]:
    """(subject, event_id, body) of `orgs` pro organizations, each created then buying one seat at a time.

    Every organization's anchor lies a day back and its seats follow within seconds, so that no
    renewal falls due and every charge is the rule's proration of a full unit price."""
    base = now - timedelta(days=1)
    actor = {"type": "user", "id": "bench-owner"}
    for number in range(orgs):
        org_id = f"org_bench{number:06d}"
        anchor = base + timedelta(milliseconds=number)
        command_id = f"cmd_{uuid.uuid4().hex}"
        created = OrganizationCreated(
            name=f"Bench {number}",
            plan="pro",
            owner_user_id="bench-owner",
            owner_email=f"owner@bench{number}.io",
            seats_included=pricing.INCLUDED_SEATS["pro"],
            unit_price_cents=pricing.UNIT_PRICE_CENTS,
            billing_anchor=anchor,
        )
        yield _publication(org_id, 1, anchor, actor, command_id, created)
        for seat in range(seats_per_org):
            at = anchor + timedelta(milliseconds=10 * (seat + 1))
            start, end = pricing.billing_period(anchor, at)
            added = SeatAdded(
                quantity=1,
                seats_total=pricing.INCLUDED_SEATS["pro"] + seat + 1,
                unit_price_cents=pricing.UNIT_PRICE_CENTS,
                charge_cents=pricing.prorate(pricing.UNIT_PRICE_CENTS, 1, start, end, at),
                billing_period_start=start,
                billing_period_end=end,
            )
            yield _publication(org_id, seat + 2, at, actor, f"cmd_{uuid.uuid4().hex}", added)


def _publication(org_id: str, sequence: int, at: datetime, actor: dict, command_id: str, data: Any) -> tuple[str, str, bytes]:
    event_type = type(data).__name__
    envelope = Envelope(
        event_id=f"evt_{uuid.uuid4().hex}",
        event_type=event_type,
        schema_version=SCHEMA_VERSION,
        org_id=org_id,
        sequence=sequence,
        occurred_at=at,
        actor=msgspec.convert(actor, Actor),
        command_id=command_id,
        correlation_id=None,
        data=data,
    )
    return subjects.event(org_id, event_type), envelope.event_id, _encoder.encode(envelope)


async def fill_stream(nats_url: str, orgs: int, seats_per_org: int) -> tuple[int, float]:
    """A fresh MEMBERSHIP stream holding only the synthetic events: (count, publish rate)."""
    publications = list(synthetic_events(orgs, seats_per_org, datetime.now(UTC)))
    elapsed = await publish_fresh(nats_url, publications, len(publications))
    return len(publications), len(publications) / elapsed


async def wait_applied(client: Client, service: str, total: int, timeout: float) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while True:
        status = await client.query(service, "projection_status")
        assert status["ok"], status
        if status["result"]["events_applied"] >= total:
            return status["result"]
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{service} applied {status['result']['events_applied']} of {total} events in {timeout}s")
        await asyncio.sleep(0.25)


async def ledger_counts(database_url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(database_url)
    try:
        charges = await connection.fetchval("SELECT count(*) FROM billing.charges")
        mismatches = await connection.fetchval("SELECT count(*) FROM billing.mismatches")
    finally:
        await connection.close()
    return charges, mismatches


async def rebuild_throughput(stack: Any, orgs: int = 1000, seats_per_org: int = 99) -> list[Figure]:
    """Fills the stream, lets a billing service project it live, then times its rebuild."""
    total, publish_rate = await fill_stream(stack.nats.url, orgs, seats_per_org)
    database = stack.database("bench_billing_rebuild")
    billing = stack.service("billing", database)
    started = time.perf_counter()
    billing.start()
    try:
        client = Client(await nats.connect(stack.nats.url), timeout=600)
        try:
            await wait_applied(client, "billing", total, timeout=240)
            catch_up = time.perf_counter() - started
            reply = await client.request("billing.admin.rebuild", {})
        finally:
            await client.close()
        if not reply.get("ok"):
            raise RuntimeError(f"rebuild failed: {reply}")
        charges, mismatches = await ledger_counts(database)
    finally:
        billing.stop()
    result = reply["result"]
    seat_events = orgs * seats_per_org
    check = f"({charges:,} charges, {mismatches} mismatches, {result['undecodable']} undecodable)"
    if charges != seat_events or mismatches or result["undecodable"]:
        check += f" UNEXPECTED: {seat_events:,} charges expected"
    return [
        Figure(f"synthetic events published ({orgs:,} orgs)", publish_rate, "msgs/s", f"({total:,} events)"),
        Figure("live projection catch-up, incl. service start-up", total / catch_up, "events/s", f"({catch_up:.1f} s)"),
        Figure(
            f"billing.admin.rebuild over {result['events']:,} events",
            result["events_per_second"],
            "events/s",
            f"({result['seconds']:.1f} s) {check}",
        ),
    ]


# --- live lag under a steady command rate ---------------------------------------------------------


async def _sender(
    client: Client, org_id: str, slot: int, senders: int, rate: float, t0: float, until: float, latencies: Latencies
) -> tuple[int, int]:
    """Sends add_seats at t0 + (k * senders + slot) / rate for every k before `until`."""
    loop = asyncio.get_running_loop()
    sent = failed = 0
    k = 0
    while (due := t0 + (k * senders + slot) / rate) < until:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        reply = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=1, accept_charge_cents=10**9)
        latencies.record(started)
        sent += 1
        failed += not reply["ok"]
        k += 1
    return sent, failed


async def _create_org(client: Client, number: int) -> str:
    created = await client.command(
        "create_organization", name=f"Lag {number}", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    assert created["ok"], created
    return created["result"]["org_id"]


async def _paced(clients: list[Client], orgs: list[str], rate: float, seconds: float) -> tuple[int, int, float, Latencies]:
    latencies = Latencies()
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_sender(clients[n % len(clients)], org, n, len(orgs), rate, t0, t0 + seconds, latencies) for n, org in enumerate(orgs))
    )
    elapsed = time.perf_counter() - started
    return sum(s for s, _ in results), sum(f for _, f in results), elapsed, latencies


async def live_lag(
    nats_url: str, rate: float = 200.0, seconds: float = 10.0, warm_up: float = 1.0, senders: int = 10, connections: int = 4
) -> list[Figure]:
    """add_seats at a steady rate through membership, and billing's projection lag for what it applied."""
    clients = [Client(await nats.connect(nats_url), timeout=30) for _ in range(connections)]
    try:
        orgs = await asyncio.gather(*(_create_org(clients[n % connections], n) for n in range(senders)))
        await wait_applied(clients[0], "billing", len(orgs), timeout=30)
        warm_sent, warm_failed, _, _ = await _paced(clients, orgs, rate, warm_up)
        await wait_applied(clients[0], "billing", len(orgs) + warm_sent - warm_failed, timeout=30)
        sent, failed, elapsed, latencies = await _paced(clients, orgs, rate, seconds)
        expected = len(orgs) + warm_sent - warm_failed + sent - failed
        status = await wait_applied(clients[0], "billing", expected, timeout=60)
    finally:
        for client in clients:
            await client.close()
    note = f"({status['events_applied']:,} events incl. {len(orgs)} creations + {warm_sent} warm-up)"
    return [
        Figure(
            f"add_seats offered, {senders} paced senders",
            sent / elapsed,
            "cmds/s",
            f"({sent:,} sent, {failed} failed, target {rate:.0f})",
        ),
        Figure("add_seats reply latency p50", latencies.percentile(50), "ms"),
        Figure("add_seats reply latency p99", latencies.percentile(99), "ms"),
        Figure("billing projection lag p50", status["lag_p50_ms"], "ms", note),
        Figure("billing projection lag p99", status["lag_p99_ms"], "ms"),
    ]
