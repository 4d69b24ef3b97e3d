"""Audit writes a batch in one statement, its hashes computed in memory from the locked chain heads
(real PostgreSQL). Whatever the batches, redeliveries, gaps and crashes before a commit, the log ends
exactly as if every event had been applied alone, in order: nothing lost, nothing twice, same hashes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit import projection as audit_projection
from services.audit.projection import AuditProjection
from shared.consumer import apply_in_order, prepare
from shared.contract.events import Envelope, decode_envelope
from tests.integration.histories import OrgHistory
from tests.integration.test_audit_projection import T0

BATCHED, ALONE = "audit_batched", "audit_alone"
TABLES = {
    "entries": "org_id, seq",
    "chains": "org_id",
    "raw_events": "event_id",
    "recorded_sequences": "org_id, sequence",
    "positions": "org_id",
}


class KilledBeforeCommit(Exception):
    """The process died after the batch's statement ran, before its transaction committed."""


def interleaved_stream() -> list[Envelope]:
    """Three organizations' histories, interleaved as the stream carries them."""
    histories = [OrgHistory(f"org_{n}", T0, plan=("free", "pro", "enterprise")[n]) for n in range(3)]
    for day in range(1, 9):
        for n, history in enumerate(histories):
            at = T0 + timedelta(days=day, minutes=n)
            history.invited(at) if (day + n) % 2 else history.seats_added(1, at)
    stream = sorted((event for history in histories for event in history.events), key=lambda e: (e["occurred_at"], e["org_id"]))
    return [decode_envelope(msgspec.json.encode(event)) for event in stream]


STREAM = interleaved_stream()
# A delivery: from where in the stream (redelivering what came before, or skipping ahead past a gap),
# how many messages, and whether the process is killed before the batch commits.
DELIVERIES = st.lists(st.tuples(st.integers(0, len(STREAM) - 1), st.integers(1, 20), st.booleans()), min_size=1, max_size=12)


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def fresh(pool: asyncpg.Pool, schema: str) -> AuditProjection:
    projection = AuditProjection(schema)
    async with pool.acquire() as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await prepare(connection, projection)
    return projection


async def deliver(pool: asyncpg.Pool, projection: AuditProjection, batch: list[Envelope], killed: bool = False) -> None:
    async with pool.acquire() as connection:
        try:
            async with connection.transaction():
                await apply_in_order(connection, projection, batch)
                if killed:
                    raise KilledBeforeCommit
        except KilledBeforeCommit:
            pass


async def contents(pool: asyncpg.Pool, schema: str) -> dict[str, list[Any]]:
    return {
        table: [tuple(row) for row in await pool.fetch(f'SELECT * FROM "{schema}".{table} ORDER BY {order}')]
        for table, order in TABLES.items()
    }


# A batch is written in chunks of `APPEND_CHUNK` rows; chunks of 3 make this stream's batches several.
CHUNKS = pytest.mark.parametrize("chunk", [audit_projection.APPEND_CHUNK, 3])


@CHUNKS
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries=DELIVERIES)
async def test_any_batches_redeliveries_and_kills_end_as_every_event_applied_alone(pool, monkeypatch, chunk, deliveries):
    monkeypatch.setattr(audit_projection, "APPEND_CHUNK", chunk)
    alone = await fresh(pool, ALONE)
    for event in STREAM:
        await deliver(pool, alone, [event])
    batched = await fresh(pool, BATCHED)
    for start, size, killed in deliveries:
        await deliver(pool, batched, STREAM[start : start + size], killed)
    await deliver(pool, batched, STREAM)  # the consumer redelivers everything not acknowledged, in order

    assert await contents(pool, BATCHED) == await contents(pool, ALONE)


async def test_a_chunk_that_cannot_be_built_while_the_one_before_is_written_rolls_the_batch_back(pool, monkeypatch):
    """The statement in flight ends before the failure comes out: the transaction rolls back on a
    connection that is free again, and the batch leaves nothing behind."""
    monkeypatch.setattr(audit_projection, "APPEND_CHUNK", 3)
    audit = await fresh(pool, BATCHED)
    await deliver(pool, audit, STREAM[:2])
    before = await contents(pool, BATCHED)
    broken = msgspec.structs.replace(STREAM[8], event_type="MemberInvited", data={"email": "no-invitation@example.com"})
    with pytest.raises(KeyError, match="invitation_id"):
        await deliver(pool, audit, [*STREAM[2:8], broken, *STREAM[9:12]])
    assert await contents(pool, BATCHED) == before
    await deliver(pool, audit, STREAM)
    alone = await fresh(pool, ALONE)
    for event in STREAM:
        await deliver(pool, alone, [event])
    assert await contents(pool, BATCHED) == await contents(pool, ALONE)
