"""Every search filter finds exactly the entries it names, page after page (real PostgreSQL).

An action prefix is answered by one short scan per matching action (`BY_EACH_ACTION_SQL`), other
filters by one query; whichever path a search takes, its pages together are the brute-force answer.
A target is any id an entry's targets carry: invitations, users, keys, and the addresses of
invitation and member entries (among them ones holding `'`, `%`, `_`, `+`, braces and a pipe)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit.projection import LIVE_SCHEMA, AuditProjection
from services.audit.read_model import AuditReadModel
from shared.bus import declare_streams
from shared.consumer import apply_in_order, prepare
from shared.contract import queries as q
from shared.contract.events import decode_envelope
from shared.stream_heads import StreamHeads
from tests.integration.histories import OrgHistory
from tests.integration.test_audit_projection import T0

DAYS = 30
ACTION_FILTERS = [
    None,
    "member.*",
    "api_key.*",
    "unknown.*",
    "invitation.*",
    "seats.*",
    "nothing.*",
    "member.removed",
    "seats.added",
    "unknown.member_x",
]


def a_mixed_history(org_id: str, in_time_order: bool) -> OrgHistory:
    """Known actions and unknown ones whose names resemble them (`member_x`, `api_keyX`); actors vary."""
    rng = random.Random(7)
    history = OrgHistory(org_id, T0, plan="enterprise")
    for n in range(1, 120):
        at = T0 + timedelta(hours=6 * n)
        if not in_time_order and n % 17 == 0:
            at -= timedelta(days=3)  # a retried dead letter arrives with its old time
        kind = rng.randrange(7)
        if kind == 0:
            event = history.invited(at)
        elif kind == 1:
            event = history.seats_added(1, at)
        elif kind == 2:
            event = history._event("MemberRemoved", at, {"user_id": f"usr_{n}", "email": f"m{n}@x.io", "role": "admin"})
        elif kind == 3:
            event = history._event("ApiKeyRevoked", at, {"key_id": f"key_{n}", "reason": "revoked"})
        elif kind == 4:
            event = history._event("InvitationRevoked", at, {"invitation_id": f"inv_{n}", "email": f"m{n}@x.io"})
        else:
            event = history._event(rng.choice(["member_x", "api_keyX", "Seats.Added"]), at, {"n": n})
        event["actor"] = {"type": "user", "id": f"usr_{n % 3}"}
    # Addresses membership accepts that hold what SQL quoting, LIKE patterns and JSON treat specially.
    for n, email in enumerate(["o'brien+100%_x@x.io", "m1@x.io", "a{b}|c~d@x.io"], start=1):
        event = history._event(
            "InvitationRevoked", T0 + timedelta(days=DAYS, minutes=n), {"invitation_id": f"inv_odd_{n}", "email": email}
        )
        event["actor"] = {"type": "user", "id": f"usr_{n % 3}"}
    return history


@pytest.fixture
async def searched(clean_nats, database_url):
    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    projection = AuditProjection(LIVE_SCHEMA)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
        for org_id, in_order in (("org_ordered", True), ("org_late", False)):
            events = [decode_envelope(msgspec.json.encode(e)) for e in a_mixed_history(org_id, in_order).events]
            async with connection.transaction():
                await apply_in_order(connection, projection, events)
    read_model = AuditReadModel(pool, LIVE_SCHEMA, StreamHeads(nc.jetstream()))
    everything = {org: await every_entry(read_model, org) for org in ("org_ordered", "org_late")}
    yield read_model, everything
    await pool.close()
    await nc.close()


async def search(read_model: AuditReadModel, body: dict[str, Any]) -> dict[str, Any]:
    found = await read_model.search(msgspec.convert(body, q.AuditSearch))
    return msgspec.json.decode(msgspec.json.encode(found))


async def every_entry(read_model: AuditReadModel, org_id: str) -> list[dict[str, Any]]:
    return (await search(read_model, {"org_id": org_id, "limit": 1000}))["entries"]


def matches(
    entry: dict[str, Any],
    action: str | None,
    actor: str | None,
    target: str | None,
    start: datetime | None,
    end: datetime | None,
) -> bool:
    at = msgspec.convert(entry["occurred_at"], datetime)
    return (
        (action is None or (entry["action"].startswith(action[:-1]) if action.endswith(".*") else entry["action"] == action))
        and (actor is None or entry["actor"]["id"] == actor)
        and (target is None or any(t["id"] == target for t in entry["targets"]))
        and (start is None or at >= start)
        and (end is None or at < end)
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    org_id=st.sampled_from(["org_ordered", "org_late"]),
    action=st.sampled_from(ACTION_FILTERS),
    actor=st.sampled_from([None, "usr_1"]),
    target_choice=st.none() | st.none() | st.integers(0, 10_000),
    start_day=st.none() | st.integers(0, DAYS),
    width=st.integers(1, DAYS),
    bounded=st.booleans(),
    limit=st.integers(1, 25),
)
async def test_pages_of_a_filtered_search_are_exactly_the_matching_entries(
    searched, org_id, action, actor, target_choice, start_day, width, bounded, limit
):
    read_model, everything = searched
    target_ids = sorted({t["id"] for e in everything[org_id] for t in e["targets"]})
    target = None if target_choice is None else target_ids[target_choice % len(target_ids)]
    start = None if start_day is None else T0 + timedelta(days=start_day, hours=3)
    end = T0 + timedelta(days=(start_day or 0) + width) if bounded else None
    body: dict[str, Any] = {"org_id": org_id, "limit": limit}
    if action:
        body["action"] = action
    if actor:
        body["actor_id"] = actor
    if target:
        body["target_id"] = target
    if start:
        body["from"] = start.isoformat()
    if end:
        body["to"] = end.isoformat()
    found, cursor = [], None
    while True:
        page = await search(read_model, {**body, **({"cursor": cursor} if cursor else {})})
        assert len(page["entries"]) <= limit
        found += page["entries"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert found == [e for e in everything[org_id] if matches(e, action, actor, target, start, end)]
