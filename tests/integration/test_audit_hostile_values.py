"""Hostile values in audit's batches (found by review): the chain verifies as PostgreSQL gives the entries
back, and a batch written in chunks equals every event applied alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from services.audit import projection as audit_projection
from services.audit.entries import ChainWalk
from services.audit.projection import ENTRY_COLUMNS
from services.audit.read_model import entry_of
from shared.contract.events import MAX_NESTING, decode_envelope
from tests.integration.histories import OrgHistory
from tests.integration.test_audit_batches import ALONE, BATCHED, contents, deliver, fresh
from tests.integration.test_audit_projection import T0

DEEP: Any = "x"
for _ in range(MAX_NESTING - 8):  # as deep as an envelope may nest
    DEEP = [DEEP]

HOSTILE_DATA: list[Any] = [
    {"f": 1e16},
    {"f": -0.0},
    {"f": 1e-7},
    {"f": 1.0},
    {"f": 1e300},
    {"f": [1.5e17, -1e16, 1.2345678901234567e20, {"g": -0.0}], "g": 5e-324},
    {"f": 0.1 + 0.2},
    {"i": 10**30},
    {"t": "nul\u0000 c0\u0001\u001f del\u007f c1\u0085\u009f ls\u2028\u2029 bidi\u202e crlf\r\n"},
    {"deep": DEEP},
    {"big": "x" * 100_000},
]


def history(org: str, items: list[Any]) -> OrgHistory:
    h = OrgHistory(org, T0, plan="enterprise")
    at = iter(T0 + timedelta(minutes=m) for m in range(1, 1000))
    for n, data in enumerate(items):
        h._event(f"MadeUp{n}", next(at), data)
    # A known event whose data holds a float the entry leaves out (PlanChanged's metadata drops extras).
    h._event(
        "PlanChanged",
        next(at),
        {
            "from_plan": "enterprise",
            "to_plan": "pro",
            "seats_included": 5,
            "billing_anchor": "2026-01-01T00:00:00Z",
            "extra": 2.5,
        },
    )
    h.seats_added(1, next(at))
    return h


def stream(items: list[Any]) -> list:
    events = [e for org in ("acme", "beta") for e in history(org, items).events]
    events.sort(key=lambda e: (e["occurred_at"], e["org_id"]))
    return [decode_envelope(msgspec.json.encode(e)) for e in events]


async def walk(pool: asyncpg.Pool, schema: str, org: str) -> dict[str, Any]:
    w = ChainWalk()
    rows = await pool.fetch(f'SELECT {", ".join(ENTRY_COLUMNS)} FROM "{schema}".entries WHERE org_id = $1 ORDER BY seq', org)
    for row in rows:
        broken = w.step(entry_of(row))
        if broken is not None:
            return {**broken, "entry": entry_of(row)["metadata"]}
    chain = await pool.fetchrow(f'SELECT * FROM "{schema}".chains WHERE org_id = $1', org)
    return w.end(chain["last_seq"], chain["last_hash"])


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.mark.parametrize("item", range(len(HOSTILE_DATA)))
@pytest.mark.parametrize("chunk", [250, 3])
async def test_hostile_values_verify_and_chunked_equals_alone(pool, monkeypatch, chunk, item):
    monkeypatch.setattr(audit_projection, "APPEND_CHUNK", chunk)
    events = stream([HOSTILE_DATA[item]])
    alone = await fresh(pool, ALONE)
    for event in events:
        await deliver(pool, alone, [event])
    batched = await fresh(pool, BATCHED)
    await deliver(pool, batched, events)
    assert await contents(pool, BATCHED) == await contents(pool, ALONE)
    assert len((await contents(pool, BATCHED))["entries"]) == len(events)
    for org in ("acme", "beta"):
        verdict = await walk(pool, BATCHED, org)
        assert verdict.get("ok"), verdict


@pytest.mark.parametrize("offset", ["+05:00", "-00:00", "+00:00"])
async def test_an_event_time_with_an_offset_verifies(pool, offset):
    """The envelope's `occurred_at` only has to carry an offset; stored as an instant, it reads back as Z,
    so the entry is hashed in UTC."""
    h = OrgHistory("acme", T0, plan="enterprise")
    h._event("MadeUpOffset", T0 + timedelta(minutes=1), {"x": 1})
    raw = [msgspec.json.encode(e) for e in h.events]
    last = msgspec.json.decode(raw[-1])
    last["occurred_at"] = {"+05:00": "2024-01-01T14:01:00+05:00"}.get(offset, "2024-01-01T09:01:00" + offset)
    raw[-1] = msgspec.json.encode(last)
    events = [decode_envelope(r) for r in raw]
    audit = await fresh(pool, BATCHED)
    await deliver(pool, audit, events)
    verdict = await walk(pool, BATCHED, "acme")
    assert verdict.get("ok"), (offset, verdict)
