"""The audit log on real NATS and PostgreSQL: the chain, tampering, retention, paging, rebuild."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from services.audit.projection import LIVE_SCHEMA, AuditProjection
from services.audit.read_model import AuditReadModel
from services.audit.retention import purge
from shared.consumer import ConsumerSettings, ProjectionConsumer
from shared.contract import queries as q
from shared.rebuild import rebuild
from shared.stream_heads import StreamHeads
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming

UTC = UTC
T0 = datetime(2024, 1, 1, 9, tzinfo=UTC)


class Audit:
    def __init__(self, js, pool):
        self.js, self.pool = js, pool
        self.projection = AuditProjection(LIVE_SCHEMA)
        settings = ConsumerSettings(durable="audit", service="audit", retry_delay=0.1, gap_delay=0.1, ack_wait=2.0)
        self.consumer = ProjectionConsumer(js, pool, self.projection, settings)
        self.read_model = AuditReadModel(pool, LIVE_SCHEMA, StreamHeads(js))

    async def search(self, org_id: str, **filters) -> dict:
        """What a client gets: the reply as it goes over the wire."""
        found = await self.read_model.search(msgspec.convert({"org_id": org_id, **filters}, q.AuditSearch))
        return msgspec.json.decode(msgspec.json.encode(found))

    async def all_entries(self, org_id: str) -> list[dict]:
        return (await self.search(org_id, limit=1000))["entries"]

    async def caught_up(self, org_id: str, seq: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.pool.fetchval("SELECT last_seq FROM audit.chains WHERE org_id = $1", org_id) or 0) >= seq:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"audit did not reach {org_id} #{seq}")

    async def as_an_attacker(self, sql: str, *args) -> None:
        """Direct database access, triggers switched off, as a superuser could."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SET LOCAL session_replication_role = replica")
            await connection.execute(sql, *args)


@pytest.fixture
async def audit(clean_nats, database_url):
    async with consuming(clean_nats, database_url, Audit) as service:
        yield service


def a_team_history(org_id: str = "acme", plan: str = "pro") -> OrgHistory:
    history = OrgHistory(org_id, T0, plan=plan)
    for day in range(1, 41):
        at = T0 + timedelta(days=day)
        history.invited(at) if day % 2 else history.seats_added(1, at)
    return history


async def record(audit: Audit, history: OrgHistory) -> None:
    for event in history.events:
        await publish(audit.js, event)
    await audit.caught_up(history.org_id, len(history.events))


async def test_each_event_is_one_entry_whose_hash_anyone_can_recompute(audit):
    history = a_team_history()
    await record(audit, history)
    entries = await audit.all_entries("acme")
    assert [e["seq"] for e in entries] == list(range(1, len(history.events) + 1))
    assert [e["event_id"] for e in entries] == [e["event_id"] for e in history.events]
    assert entries[0]["action"] == "organization.created" and entries[1]["action"] == "member.invited"
    assert {"type": "invitation", "id": history.events[1]["data"]["invitation_id"]} in entries[1]["targets"]
    assert entries[2]["metadata"]["before"] == {"seats_total": 3} and entries[2]["metadata"]["after"] == {"seats_total": 4}
    prev = "0" * 64
    for entry in entries:  # the contract's rule, written out here, over exactly what search returned
        body = {k: v for k, v in entry.items() if k not in ("prev_hash", "hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["prev_hash"] == prev
        assert entry["hash"] == hashlib.sha256((prev + "\n" + canonical).encode()).hexdigest()
        prev = entry["hash"]
    assert await audit.read_model.verify("acme") == {
        "ok": True,
        "entries_checked": len(entries),
        "head_hash": prev,
        "missing": [],
        "missing_events": 0,
        "pending": 0,
    }
    raw = await audit.read_model.get_event(history.events[5]["event_id"])
    assert (raw["event_id"], raw["event_type"], raw["sequence"]) == (history.events[5]["event_id"], "MemberInvited", 6)
    assert raw["data"]["email"] == history.events[5]["data"]["email"]


async def test_the_database_refuses_to_change_or_delete_an_entry(audit):
    await record(audit, a_team_history())
    for statement in (
        "UPDATE audit.entries SET action = 'x' WHERE seq = 3",
        "DELETE FROM audit.entries WHERE seq = 3",
        "TRUNCATE audit.entries",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await audit.pool.execute(statement)
    assert len(await audit.all_entries("acme")) == 41


@pytest.mark.parametrize(
    "tampering, first_bad_seq",
    [
        (
            "UPDATE audit.entries SET metadata = jsonb_set(metadata, '{email}', '\"someone@else.io\"') WHERE org_id = 'acme' AND seq = 12",
            12,
        ),
        ("UPDATE audit.entries SET occurred_at = occurred_at - interval '1 day' WHERE org_id = 'acme' AND seq = 7", 7),
        ("DELETE FROM audit.entries WHERE org_id = 'acme' AND seq = 20", 20),
        ("UPDATE audit.entries SET seq = CASE seq WHEN 15 THEN 16 ELSE 15 END WHERE org_id = 'acme' AND seq IN (15, 16)", 15),
        ("DELETE FROM audit.entries WHERE org_id = 'acme' AND seq = 41", 41),
    ],
    ids=["edited metadata", "edited time", "deleted row", "swapped pair", "deleted last row"],
)
async def test_verify_names_the_first_bad_seq_after_tampering(audit, tampering, first_bad_seq):
    await record(audit, a_team_history())
    await audit.as_an_attacker("ALTER TABLE audit.entries DROP CONSTRAINT entries_pkey")
    await audit.as_an_attacker(tampering)
    outcome = await audit.read_model.verify("acme")
    assert outcome["ok"] is False and outcome["first_bad_seq"] == first_bad_seq, outcome


async def test_retention_purges_old_ranges_and_the_rest_still_verifies(audit):
    await record(audit, a_team_history("acme", plan="pro"))
    await record(audit, a_team_history("bigco", plan="enterprise"))
    now = T0 + timedelta(days=50)  # pro keeps 30 days: entries before day 20 go
    async with audit.pool.acquire() as connection:
        removed = await purge(connection, LIVE_SCHEMA, now)
    remaining = await audit.all_entries("acme")
    assert removed == 20 and remaining[0]["seq"] == 21
    assert len(await audit.all_entries("bigco")) == 41  # enterprise keeps a year
    verified = await audit.read_model.verify("acme")
    assert verified["ok"] is True and verified["entries_checked"] == 21
    await audit.as_an_attacker("UPDATE audit.checkpoints SET hash = $1 WHERE org_id = 'acme'", "f" * 64)
    assert (await audit.read_model.verify("acme"))["first_bad_seq"] == 21


async def test_paging_while_entries_are_appended_returns_every_entry_exactly_once(audit):
    history = a_team_history()
    await record(audit, history)
    seen, cursor = [], None
    appending = asyncio.create_task(_append_more(audit, history, 30))
    while True:
        page = await audit.search("acme", limit=7, **({"cursor": cursor} if cursor else {}))
        seen += [entry["seq"] for entry in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        await asyncio.sleep(0.02)
    await appending
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 41


async def _append_more(audit: Audit, history: OrgHistory, count: int) -> None:
    for n in range(count):
        await publish(audit.js, history.invited(T0 + timedelta(days=60, minutes=n)))
        await asyncio.sleep(0.01)


async def test_search_filters_by_time_action_prefix_actor_and_target(audit):
    history = a_team_history()
    await record(audit, history)
    window = await audit.search(
        "acme", **{"from": (T0 + timedelta(days=10)).isoformat(), "to": (T0 + timedelta(days=20)).isoformat()}
    )
    assert [e["seq"] for e in window["entries"]] == list(range(11, 21))
    invited = await audit.search("acme", action="member.*")
    assert {e["action"] for e in invited["entries"]} == {"member.invited"} and len(invited["entries"]) == 20
    seats = await audit.search("acme", action="seats.added", **{"from": (T0 + timedelta(days=30)).isoformat()})
    assert [e["seq"] for e in seats["entries"]] == [31, 33, 35, 37, 39, 41]
    assert len((await audit.search("acme", actor_id="platform"))["entries"]) == 41
    target = history.events[3]["data"]["invitation_id"]
    assert [e["seq"] for e in (await audit.search("acme", target_id=target))["entries"]] == [4]


async def test_a_duplicate_delivery_adds_nothing(audit):
    history = a_team_history()
    await record(audit, history)
    await publish(audit.js, history.events[10], msg_id="a-second-copy")
    await publish(audit.js, history.invited(T0 + timedelta(days=70)))
    await audit.caught_up("acme", 42)
    await asyncio.sleep(0.3)
    assert [e["seq"] for e in await audit.all_entries("acme")] == list(range(1, 43))


async def test_an_export_in_chunks_holds_every_entry_once_in_both_formats(audit):
    await record(audit, a_team_history())
    entries = await audit.all_entries("acme")
    for fmt in ("ndjson", "csv"):
        chunks, cursor = [], None
        while True:
            query = msgspec.convert({"org_id": "acme", "format": fmt, **({"cursor": cursor} if cursor else {})}, q.AuditExport)
            chunk = await audit.read_model.export(query)
            chunks.append(chunk["data"])
            cursor = chunk["next_cursor"]
            if cursor is None:
                break
        text = "".join(chunks)
        if fmt == "ndjson":
            assert [json.loads(line) for line in text.splitlines()] == entries
        else:
            rows = list(csv.DictReader(io.StringIO(text)))
            assert [(int(r["seq"]), r["hash"]) for r in rows] == [(e["seq"], e["hash"]) for e in entries]


async def every_row(pool) -> dict[str, list[tuple]]:
    """Each table of the live schema, row for row (entries, chains, raw events, recorded sequences, positions)."""
    tables = {
        "entries": "org_id, seq",
        "chains": "org_id",
        "raw_events": "event_id",
        "recorded_sequences": "org_id, sequence",
        "positions": "org_id",
    }
    return {
        table: [tuple(row) for row in await pool.fetch(f"SELECT * FROM {LIVE_SCHEMA}.{table} ORDER BY {order}")]
        for table, order in tables.items()
    }


async def indexes(pool, schema: str) -> list[str]:
    rows = await pool.fetch("SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname", schema)
    return [row["indexdef"] for row in rows]


async def test_a_rebuild_produces_the_identical_chain(audit):
    for org_id in ("acme", "bigco", "tiny"):
        await record(audit, a_team_history(org_id))
    before = await every_row(audit.pool)
    live_indexes = await indexes(audit.pool, LIVE_SCHEMA)
    report = await rebuild(audit.js, audit.pool, AuditProjection("audit_rebuild"), LIVE_SCHEMA, audit.consumer.paused)
    assert report.events == 123
    assert await every_row(audit.pool) == before
    assert await indexes(audit.pool, LIVE_SCHEMA) == live_indexes  # the search indexes built after the replay
    assert (await audit.read_model.verify("bigco"))["ok"] is True
    with pytest.raises(asyncpg.RaiseError):
        await audit.pool.execute("DELETE FROM audit.entries")  # the rebuilt table is append-only too
