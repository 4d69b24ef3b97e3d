"""Audit: search latency and export rate on one organization of a million entries, and rebuild rate.

One enterprise organization (365 days kept, so retention removes nothing) receives synthetic but
valid envelopes, one every few seconds across about two months ending now, published straight to
the MEMBERSHIP stream; the audit service projects them live, then answers searches and exports,
then rebuilds from the stream.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats

from shared import pricing, subjects
from shared.contract.common import Actor, Role
from shared.contract.events import (
    SCHEMA_VERSION,
    ApiKeyCreated,
    ApiKeyRevoked,
    Envelope,
    InvitationAccepted,
    InvitationResent,
    InvitationRevoked,
    MemberInvited,
    MemberRemoved,
    OrganizationCreated,
    RoleChanged,
    SeatAdded,
    SeatRemoved,
)
from teamctl.client import Client

from .billing import wait_applied
from .measure import Figure, Latencies
from .streams import publish_fresh

ENTRIES = 1_000_000
HISTORY = timedelta(days=60)
REBUILD_EVENTS = 200_000  # a separate stream and database; None rebuilds the searched million in place
SEARCHES, SEARCH_CLIENTS, SEARCH_LIMIT = 300, 4, 100
EXPORT_ENTRIES = 200_000
# Searched actions: frequent exact, frequent prefix, rare exact, rare prefix (shares in the mix below).
SEARCH_ACTIONS = ("seats.added", "member.*", "member.removed", "api_key.*")

# (event type, weight in percent) of what follows the organization's creation.
MIX = (
    ("MemberInvited", 30),
    ("InvitationAccepted", 20),
    ("SeatAdded", 20),
    ("RoleChanged", 10),
    ("InvitationResent", 5),
    ("InvitationRevoked", 5),
    ("SeatRemoved", 4),
    ("MemberRemoved", 3),
    ("ApiKeyCreated", 2),
    ("ApiKeyRevoked", 1),
)
ROLES: tuple[Role, ...] = ("admin", "developer")
_encoder = msgspec.json.Encoder()


class History:
    """The synthetic history of one organization: event n (1-based `sequence`) at `at(n)`."""

    def __init__(self, org_id: str, events: int, end: datetime, seed: int = 4) -> None:
        self.org_id = org_id
        self.events = events
        self.step = HISTORY / events
        self.start = end - HISTORY
        self.seed = seed

    def at(self, sequence: int) -> datetime:
        return self.start + self.step * (sequence - 1)

    def publications(self) -> Iterator[tuple[str, str, bytes]]:
        rng = random.Random(self.seed)
        kinds = [kind for kind, weight in MIX for _ in range(weight)]
        owner = Actor(type="user", id="usr_bench_owner")
        unit = pricing.UNIT_PRICE_CENTS
        seats = included = pricing.INCLUDED_SEATS["enterprise"]
        yield self._publication(
            1,
            owner,
            OrganizationCreated(
                name="Audit Bench",
                plan="enterprise",
                owner_user_id=owner.id,
                owner_email="owner@audit-bench.io",
                seats_included=included,
                unit_price_cents=unit,
                billing_anchor=self.start,
            ),
        )
        for sequence in range(2, self.events + 1):
            at = self.at(sequence)
            n = rng.randrange(1_000_000)
            email, invitation, user = f"m{n}@audit-bench.io", f"inv_{n:06d}", f"usr_{n:06d}"
            period_start, period_end = at - timedelta(days=1), at + timedelta(days=29)
            match rng.choice(kinds):
                case "MemberInvited":
                    data: Any = MemberInvited(
                        invitation_id=invitation,
                        email=email,
                        role=rng.choice(ROLES),
                        invited_by=owner,
                        expires_at=at + timedelta(days=7),
                    )
                case "InvitationAccepted":
                    data = InvitationAccepted(invitation_id=invitation, user_id=user, email=email, role=rng.choice(ROLES))
                case "SeatAdded":
                    seats += 1
                    data = SeatAdded(
                        quantity=1,
                        seats_total=seats,
                        unit_price_cents=unit,
                        charge_cents=unit * 29 // 30,
                        billing_period_start=period_start,
                        billing_period_end=period_end,
                    )
                case "SeatRemoved" if seats > included:
                    seats -= 1
                    data = SeatRemoved(
                        quantity=1,
                        seats_total=seats,
                        unit_price_cents=unit,
                        credit_cents=unit * 29 // 30,
                        billing_period_start=period_start,
                        billing_period_end=period_end,
                    )
                case "RoleChanged":
                    before = rng.choice(ROLES)
                    data = RoleChanged(user_id=user, email=email, from_role=before, to_role=ROLES[before == "admin"])
                case "InvitationResent":
                    data = InvitationResent(invitation_id=invitation, email=email, expires_at=at + timedelta(days=7))
                case "InvitationRevoked":
                    data = InvitationRevoked(invitation_id=invitation, email=email)
                case "MemberRemoved":
                    data = MemberRemoved(user_id=user, email=email, role=rng.choice(ROLES))
                case "ApiKeyCreated":
                    data = ApiKeyCreated(
                        key_id=f"key_{n:06d}",
                        name=f"ci {n}",
                        prefix=f"tm_{n:06d}"[:9],
                        owner_user_id=user,
                        permissions=["projects:read", "projects:use"],
                        expires_at=None,
                    )
                case "ApiKeyRevoked":
                    data = ApiKeyRevoked(key_id=f"key_{n:06d}", reason="revoked")
                case _:  # a removal with no seat above the included ones: a seat bought instead
                    seats += 1
                    data = SeatAdded(
                        quantity=1,
                        seats_total=seats,
                        unit_price_cents=unit,
                        charge_cents=unit * 29 // 30,
                        billing_period_start=period_start,
                        billing_period_end=period_end,
                    )
            yield self._publication(sequence, owner, data)

    def _publication(self, sequence: int, actor: Actor, data: Any) -> tuple[str, str, bytes]:
        event_type = type(data).__name__
        envelope = Envelope(
            event_id=f"evt_{uuid.uuid4().hex}",
            event_type=event_type,
            schema_version=SCHEMA_VERSION,
            org_id=self.org_id,
            sequence=sequence,
            occurred_at=self.at(sequence),
            actor=actor,
            command_id=f"cmd_{uuid.uuid4().hex}",
            correlation_id=None,
            data=data,
        )
        return subjects.event(self.org_id, event_type), envelope.event_id, _encoder.encode(envelope)


async def publish_history(nats_url: str, history: History) -> float:
    """A fresh MEMBERSHIP stream holding only this history; the rate of generating and publishing it."""
    return history.events / await publish_fresh(nats_url, history.publications(), history.events)


async def catch_up(stack: Any, history: History, database: str) -> tuple[Any, Figure, Figure]:
    """Publishes the history, starts audit on `database` and waits until it has applied every event."""
    rate = await publish_history(stack.nats.url, history)
    published = Figure("synthetic events generated and published", rate, "msgs/s", f"({history.events:,} events)")
    started = time.perf_counter()
    audit = stack.service("audit", database).start()
    try:
        client = Client(await nats.connect(stack.nats.url), timeout=60)
        try:
            await wait_applied(client, "audit", history.events, timeout=1800)
        finally:
            await client.close()
    except BaseException:
        audit.stop()
        raise
    seconds = time.perf_counter() - started
    live = Figure("live projection catch-up, incl. service start-up", history.events / seconds, "events/s", f"({seconds:.1f} s)")
    return audit, published, live


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _searcher(
    client: Client,
    history: History,
    rng: random.Random,
    count: int,
    latencies: dict[str, Latencies],
    totals: Latencies,
    returned: list[int],
) -> int:
    failures = 0
    for _ in range(count):
        action = rng.choice(SEARCH_ACTIONS)
        width = timedelta(hours=2 ** rng.uniform(0, 9))  # 1 hour to about 3 weeks, log-uniform
        start = history.start + (HISTORY - width) * rng.random()
        started = time.perf_counter()
        reply = await client.query(
            "audit",
            "search",
            org_id=history.org_id,
            action=action,
            limit=SEARCH_LIMIT,
            **{"from": _rfc3339(start), "to": _rfc3339(start + width)},
        )
        latencies[action].record(started)
        totals.samples_ms.append(latencies[action].samples_ms[-1])
        if reply.get("ok"):
            returned.append(len(reply["result"]["entries"]))
        else:
            failures += 1
    return failures


async def search_latency(nats_url: str, history: History) -> list[Figure]:
    clients = [Client(await nats.connect(nats_url), timeout=60) for _ in range(SEARCH_CLIENTS)]
    by_action: dict[str, Latencies] = defaultdict(Latencies)
    totals = Latencies()
    returned: list[int] = []
    try:
        # A few queries first, so that connections and plans are warm.
        await _searcher(clients[0], history, random.Random(0), 8, defaultdict(Latencies), Latencies(), [])
        started = time.perf_counter()
        failures = await asyncio.gather(
            *(
                _searcher(client, history, random.Random(n + 1), SEARCHES // SEARCH_CLIENTS, by_action, totals, returned)
                for n, client in enumerate(clients)
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.close()
    queries = len(totals.samples_ms)
    figures = [
        Figure(
            f"search, time range + action, limit {SEARCH_LIMIT}, {SEARCH_CLIENTS} clients",
            queries / elapsed,
            "queries/s",
            f"({queries} queries, {sum(failures)} failed, {sum(returned) / max(1, len(returned)):.0f} entries/reply avg)",
        ),
        Figure("search latency p50", totals.percentile(50), "ms"),
        Figure("search latency p99", totals.percentile(99), "ms"),
    ]
    for action in SEARCH_ACTIONS:
        lat = by_action[action]
        figures.append(
            Figure(
                f"  search p99, action {action!r}",
                lat.percentile(99),
                "ms",
                f"(p50 {lat.percentile(50):.1f} ms, max {max(lat.samples_ms):.0f} ms, {len(lat.samples_ms)} queries)",
            )
        )
    return figures


async def export_rate(nats_url: str, history: History, entries: int = EXPORT_ENTRIES) -> list[Figure]:
    """Streams `entries` consecutive entries from the middle of the history as NDJSON, chunk by chunk."""
    first = (history.events - entries) // 2
    window = {"from": _rfc3339(history.at(first)), "to": _rfc3339(history.at(first + entries))}
    client = Client(await nats.connect(nats_url), timeout=60)
    received = chunks = size = 0
    cursor = None
    try:
        started = time.perf_counter()
        while True:
            body: dict[str, Any] = {"org_id": history.org_id, "format": "ndjson", **window}
            if cursor:
                body["cursor"] = cursor
            reply = await client.query("audit", "export", **body)
            if not reply.get("ok"):
                raise RuntimeError(f"export failed: {reply}")
            result = reply["result"]
            received, chunks, size = received + result["entries"], chunks + 1, size + len(result["data"])
            cursor = result["next_cursor"]
            if not cursor:
                break
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    check = "" if received == entries else f" UNEXPECTED: {entries:,} expected"
    return [
        Figure(
            "export, NDJSON, 1 client, chunk after chunk",
            received / elapsed,
            "entries/s",
            f"({received:,} entries, {chunks} chunks, {size / 1e6:.0f} MB, {elapsed:.1f} s){check}",
        ),
    ]


async def rebuild_rate(nats_url: str, events: int) -> Figure:
    client = Client(await nats.connect(nats_url), timeout=1200)
    try:
        reply = await client.request("audit.admin.rebuild", {})
    finally:
        await client.close()
    if not reply.get("ok"):
        raise RuntimeError(f"rebuild failed: {reply}")
    result = reply["result"]
    check = f"({result['seconds']:.1f} s, {result['undecodable']} undecodable)"
    if result["events"] != events or result["undecodable"]:
        check += f" UNEXPECTED: {events:,} events expected"
    return Figure(f"audit.admin.rebuild over {result['events']:,} events", result["events_per_second"], "events/s", check)


async def _verify(nats_url: str, org_id: str, events: int) -> str:
    client = Client(await nats.connect(nats_url), timeout=600)
    try:
        reply = await client.query("audit", "verify", org_id=org_id)
    finally:
        await client.close()
    result = reply.get("result") or {}
    if reply.get("ok") and result.get("ok") and result.get("entries_checked") == events:
        return f"chain verified, {events:,} entries"
    return f"UNEXPECTED verify: {reply}"


def run(stack: Any, entries: int = ENTRIES, rebuild_events: int | None = REBUILD_EVENTS) -> list[Figure]:
    """The audit section on a fresh stack: its MEMBERSHIP stream holds only the synthetic events."""
    history = History("org_audit_bench", entries, datetime.now(UTC))
    audit, published, live = asyncio.run(catch_up(stack, history, stack.database("bench_audit")))
    try:
        figures = [published, live]
        figures += asyncio.run(search_latency(stack.nats.url, history))
        figures += asyncio.run(export_rate(stack.nats.url, history, min(EXPORT_ENTRIES, entries // 2)))
        if rebuild_events is None:
            rebuild = asyncio.run(rebuild_rate(stack.nats.url, entries))
            rebuild.note += "; " + asyncio.run(_verify(stack.nats.url, history.org_id, entries))
            figures.append(rebuild)
            return figures
    finally:
        audit.stop()
    # The rebuild on a stream and database of its own, smaller than the searched million.
    small = History("org_audit_rebuild", rebuild_events, datetime.now(UTC), seed=5)
    audit, _, live = asyncio.run(catch_up(stack, small, stack.database("bench_audit_rebuild")))
    try:
        rebuild = asyncio.run(rebuild_rate(stack.nats.url, rebuild_events))
        rebuild.name = f"audit.admin.rebuild, own {rebuild_events:,}-event stream+db"
        rebuild.note += "; " + asyncio.run(_verify(stack.nats.url, small.org_id, rebuild_events))
    finally:
        audit.stop()
    return [*figures, rebuild]
