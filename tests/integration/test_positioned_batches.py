"""Billing, audit and the notifier take the consumer's positions into their own statements
(`PositionedBatch`: read locked with their state, written with their rows). Real PostgreSQL.

Whatever the batch cuts, redeliveries, gaps and kills before a commit, a positioned projection gives
each event the verdict the consumer's own read and upsert around `apply` gives it, and ends with the
rows and positions of every event applied alone, in order. Its read locks the positions and its own
state for the transaction, as the consumer's own read did."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit.projection import AuditProjection, positioned_chains_sql
from services.billing.projection import BillingProjection, positioned_accounts_sql
from services.notifier.projection import WAKE_CHANNEL, NotifierProjection
from shared.consumer import ACK, PositionedBatch, Projection, apply_in_order, prepare
from shared.contract.events import Envelope, decode_envelope
from tests.integration.histories import OrgHistory
from tests.integration.test_audit_projection import T0

PROJECTIONS: dict[str, Callable[[str], Projection]] = {
    "billing": BillingProjection,
    "audit": AuditProjection,
    "notifier": NotifierProjection,
}
ORGS = 3


class OwnPositions:
    """The projection without `apply_positioned`: the consumer reads and writes the positions itself."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.schema = inner.schema

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await self.inner.create_tables(connection)

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        await self.inner.apply(connection, events)


class KilledBeforeCommit(Exception):
    """The process died after the batch's statements ran, before its transaction committed."""


def stream_of(steps: list[tuple[int, str]]) -> list[Envelope]:
    """Organizations' histories (created, then invitations and seats bought or given back), interleaved."""
    histories = [OrgHistory(f"org_{n}", T0, plan=("free", "pro", "enterprise")[n]) for n in range(ORGS)]
    for minute, (org, kind) in enumerate(steps, 1):
        history, at = histories[org], T0 + timedelta(hours=minute)
        if kind == "invited":  # invitation ids are unique across organizations, as membership makes them
            event = history.invited(at)
            event["data"]["invitation_id"] = f"inv_{org}_{history.sequence}"
        elif kind == "seats_added" or history.seats == 0:
            history.seats_added(1, at)
        else:
            history.seats_removed(1, at)
    by_time = sorted((e for h in histories for e in h.events), key=lambda e: (e["occurred_at"], e["org_id"]))
    return [decode_envelope(msgspec.json.encode(event)) for event in by_time]


STEPS = st.lists(st.tuples(st.integers(0, ORGS - 1), st.sampled_from(["invited", "seats_added", "seats_removed"])), max_size=24)
# A delivery: from where in the stream (redelivering what came before, or skipping ahead past a gap),
# how many messages, and whether the process is killed before the batch commits.
DELIVERIES = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20), st.booleans()), min_size=1, max_size=10)


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=3)
    yield pool
    await pool.close()


P = TypeVar("P", bound=Projection)


async def fresh(pool: asyncpg.Pool, projection: P) -> P:
    async with pool.acquire() as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{projection.schema}" CASCADE')
        await prepare(connection, projection)
    return projection


async def deliver(pool: asyncpg.Pool, projection: Projection, batch: list[Envelope], killed: bool = False) -> list[str]:
    async with pool.acquire() as connection:
        try:
            async with connection.transaction():
                verdicts = await apply_in_order(connection, projection, batch)
                if killed:
                    raise KilledBeforeCommit
        except KilledBeforeCommit:
            pass
    return verdicts


async def contents(pool: asyncpg.Pool, schema: str) -> dict[str, list[str]]:
    """Every table of the schema (but the migrations' own), its rows as text, sorted."""
    tables = await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_name <> 'schema_migrations'", schema
    )
    return {
        row["table_name"]: sorted(r[0] for r in await pool.fetch(f'SELECT t::text FROM "{schema}"."{row["table_name"]}" t'))
        for row in tables
    }


@pytest.mark.parametrize("service", PROJECTIONS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS, deliveries=DELIVERIES)
async def test_positioned_batches_give_the_verdicts_and_end_with_the_rows_of_events_applied_alone(
    pool, service, steps, deliveries
):
    stream = stream_of(steps)
    make = PROJECTIONS[service]
    alone = await fresh(pool, OwnPositions(make(f"{service}_alone")))
    for event in stream:
        await deliver(pool, alone, [event])
    positioned = await fresh(pool, make(f"{service}_positioned"))
    own = await fresh(pool, OwnPositions(make(f"{service}_own")))
    for start, size, killed in deliveries:
        batch = stream[start % len(stream) :][:size]
        assert await deliver(pool, positioned, batch, killed) == await deliver(pool, own, batch, killed)
    assert await deliver(pool, positioned, stream) == [ACK] * len(stream)  # everything not acked comes again, in order

    assert await contents(pool, positioned.schema) == await contents(pool, alone.schema)


@pytest.mark.parametrize(
    ("service", "state", "read_sql"),
    [("billing", "accounts", positioned_accounts_sql), ("audit", "chains", positioned_chains_sql)],
)
async def test_the_read_locks_each_position_and_each_row_of_state_for_the_transaction(pool, service, state, read_sql):
    projection = await fresh(pool, PROJECTIONS[service](f"{service}_locks"))
    schema = projection.schema
    await deliver(pool, projection, stream_of([]))  # each organization created: a position and a row of state
    async with pool.acquire() as connection:  # org_1 with a position only, org_2 with state only
        await connection.execute(f'DELETE FROM "{schema}".{state} WHERE org_id = $1', "org_1")
        await connection.execute(f'DELETE FROM "{schema}".positions WHERE org_id = $1', "org_2")
    async with pool.acquire() as reader, reader.transaction():
        rows = await reader.fetch(read_sql(schema), ["org_0", "org_1", "org_2"])
        assert sorted((row["org_id"], row["last_sequence"], row["plan"] is not None) for row in rows) == [
            ("org_0", 1, True),
            ("org_1", 1, False),
            ("org_2", None, True),
        ]
        async with pool.acquire() as other:
            for table, org_ids in (("positions", ["org_0", "org_1"]), (state, ["org_0", "org_2"])):
                for org_id in org_ids:
                    with pytest.raises(asyncpg.LockNotAvailableError):
                        await other.fetch(f'SELECT 1 FROM "{schema}".{table} WHERE org_id = $1 FOR UPDATE NOWAIT', org_id)


class Forgetful:
    """A positioned projection that applies its events but does not write the positions."""

    schema = "forgetful"

    async def create_tables(self, connection: asyncpg.Connection) -> None: ...

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None: ...

    async def apply_positioned(self, connection: asyncpg.Connection, batch: PositionedBatch) -> None:
        batch.sort_out({})


async def test_a_positioned_projection_that_does_not_write_the_positions_fails_its_batch():
    with pytest.raises(RuntimeError, match="writes them"):
        await apply_in_order(None, Forgetful(), stream_of([])[:1])  # type: ignore[arg-type]
    assert await apply_in_order(None, Forgetful(), []) == []  # type: ignore[arg-type]  # nothing applied: nothing to write


async def test_the_notifier_wakes_the_sender_when_a_batch_adds_deliveries_and_not_otherwise(pool):
    projection = await fresh(pool, NotifierProjection("notifier_wakes"))
    created, *invited = [e for e in stream_of([(0, "invited")] * 3) if e.org_id == "org_0"]
    woken: asyncio.Queue[str] = asyncio.Queue()
    async with pool.acquire() as listener:
        await listener.add_listener(WAKE_CHANNEL, lambda *args: woken.put_nowait(args[-1]))
        await deliver(pool, projection, [created])  # no delivery
        await deliver(pool, projection, [created, *invited[:2]])  # two
        await deliver(pool, projection, [created, *invited[:2]])  # duplicates only
        await deliver(pool, projection, invited[2:], killed=True)  # rolled back
        await deliver(pool, projection, invited[2:])  # one
        await pool.execute("SELECT pg_notify($1, 'end')", WAKE_CHANNEL)  # delivered after all the above
        heard = [await asyncio.wait_for(woken.get(), 10)]
        while heard[-1] != "end":
            heard.append(await asyncio.wait_for(woken.get(), 10))
        assert heard == [projection.schema, projection.schema, "end"]
        positions = await listener.fetch(f'SELECT org_id, last_sequence FROM "{projection.schema}".positions')
        await listener.reset()
    assert [tuple(row) for row in positions] == [("org_0", 4)]
