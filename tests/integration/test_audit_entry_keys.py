"""Migration 4: an entry is indexed as unique once, by its place in the chain `(org_id, seq)`; the
`raw_events` written in the same statement still refuse an event recorded twice (real PostgreSQL)."""

from __future__ import annotations

import asyncpg
import pytest

from services.audit.entries import ChainWalk, entry_for
from services.audit.projection import MIGRATIONS, SEARCH_INDEXES, AppendBatch, AuditProjection, append_sql, new_chain
from services.audit.read_model import entry_of
from shared.consumer import prepare
from shared.migrations import migrate
from tests.integration.test_audit_batches import STREAM, contents, deliver, fresh

OLD, NEW = "audit_v3", "audit_v4"


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def index_names(pool: asyncpg.Pool, schema: str) -> set[str]:
    rows = await pool.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'entries'", schema)
    return {row["indexname"] for row in rows}


async def test_a_log_written_before_migration_4_keeps_its_entries_and_chain(pool):
    old = AuditProjection(OLD)
    async with pool.acquire() as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{OLD}" CASCADE')
        await connection.execute(f'CREATE SCHEMA "{OLD}"')
        await connection.execute(f'CREATE TABLE "{OLD}".positions (org_id text PRIMARY KEY, last_sequence bigint NOT NULL)')
        await migrate(connection, OLD, [m for m in MIGRATIONS if m[0] < 4])
    assert "entries_event_id_key" in await index_names(pool, OLD)
    await deliver(pool, old, STREAM[: len(STREAM) // 2])
    before = await contents(pool, OLD)

    async with pool.acquire() as connection:
        await prepare(connection, old)  # migration 4, as a service starting on the new version does
    await deliver(pool, old, STREAM)

    assert await index_names(pool, OLD) == {"entries_pkey", *SEARCH_INDEXES}
    new = await fresh(pool, NEW)
    await deliver(pool, new, STREAM)
    after = await contents(pool, OLD)
    assert after == await contents(pool, NEW)
    assert all(row in after["entries"] for row in before["entries"])
    for org_id in {event.org_id for event in STREAM}:
        walk = ChainWalk()
        entries = await pool.fetch(f'SELECT * FROM "{OLD}".entries WHERE org_id = $1 ORDER BY seq', org_id)
        assert all(walk.step(entry_of(entry)) is None for entry in entries)


async def test_an_entry_at_a_taken_place_or_an_event_recorded_twice_is_refused(pool):
    projection = await fresh(pool, NEW)
    await deliver(pool, projection, STREAM[:3])
    primary = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'", f"{NEW}.entries"
    )
    assert primary == "PRIMARY KEY (org_id, seq)"
    async with pool.acquire() as connection:
        entry = await connection.fetchrow(f'SELECT * FROM "{NEW}".entries ORDER BY org_id, seq LIMIT 1')
        with pytest.raises(asyncpg.UniqueViolationError):  # the same place in the chain, another event
            await connection.execute(
                f'INSERT INTO "{NEW}".entries SELECT (e).* FROM (SELECT $1::"{NEW}".entries AS e) r',
                tuple({**dict(entry), "entry_id": "aud_other", "event_id": "other"}.values()),
            )
    event = STREAM[0]
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.UniqueViolationError):  # the same event at the next place: raw_events refuses it
            await connection.execute(append_sql(NEW), *_one_more(event))


def _one_more(event) -> list:
    """The append statement's arguments for `event` again, as a new entry after the head (seq 99)."""
    batch = AppendBatch()
    batch.add(entry_for(event, 99, "0" * 64), event, holds_float=False)
    no_positions: list[list] = [[], []]
    return [*batch.arguments({event.org_id: {**new_chain(), "last_seq": 99}}), *no_positions]
