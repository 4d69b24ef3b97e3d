"""A rebuild is whole or it is not swapped in: PostgreSQL killed (kill -9) between two replay batches,
and a stream that lacks an organization's earlier events.

Found by the review of issue 11's fourth round: replay batches committed with `synchronous_commit =
off` were lost to a PostgreSQL crash, the replay went on writing later batches on top of the hole
(ignoring `apply_in_order`'s WAIT verdicts), and the swap made the shadow with the hole live. A rebuild
may fail when PostgreSQL dies under it; it must never complete with rows that differ from the live ones.

This PostgreSQL runs with `wal_writer_delay = 10s` only to make the window (200 ms by default:
whatever the WAL writer has not written out yet) deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest

import shared.rebuild as rebuild_module
from devstack import PostgresServer, free_port
from services.audit.projection import LIVE_SCHEMA, AuditProjection
from shared.bus import declare_streams
from shared.consumer import prepare
from tests.integration.histories import publish
from tests.integration.test_audit_projection import Audit, a_team_history, every_row
from tests.servers import running, scratch_dir


class SlowWalWriterPostgres(PostgresServer):
    def _argv(self) -> list[str]:
        return [*super()._argv(), "-c", "wal_writer_delay=10000ms"]


@pytest.fixture
def crashable_postgres():
    with scratch_dir("pg-rebuild-whole") as path, running(SlowWalWriterPostgres(path / "data", free_port())) as server:
        server.create_database("rebuild_whole")
        yield server


@contextlib.asynccontextmanager
async def audit_on(nats_url: str, postgres: PostgresServer) -> AsyncIterator[tuple[Audit, asyncpg.Pool]]:
    """Audit's live projection, prepared, on a NATS connection and a pool of its own."""
    await declare_streams(nats_url)
    nc = await nats.connect(nats_url)
    pool = await asyncpg.create_pool(postgres.dsn("rebuild_whole"), min_size=1, max_size=6)
    try:
        audit = Audit(nc.jetstream(), pool)
        async with pool.acquire() as connection:
            await prepare(connection, audit.projection)
        yield audit, pool
    finally:
        await pool.close()
        await nc.close()


async def test_postgres_killed_between_replay_batches_never_yields_a_rebuild_that_differs_from_the_live_rows(
    clean_nats, crashable_postgres, monkeypatch
):
    async with audit_on(clean_nats, crashable_postgres) as (audit, pool):
        await _killed_between_batches(audit, pool, crashable_postgres, monkeypatch)


async def _killed_between_batches(audit: Audit, pool: asyncpg.Pool, crashable_postgres: PostgresServer, monkeypatch) -> None:
    stop = asyncio.Event()
    consuming = asyncio.create_task(audit.consumer.run(stop))
    try:
        histories = [a_team_history(org_id) for org_id in ("acme", "bigco", "tiny")]
        for history in histories:
            for event in history.events:
                await publish(audit.js, event)
        for history in histories:
            await audit.caught_up(history.org_id, len(history.events), timeout=30)
        before = await every_row(pool)

        monkeypatch.setattr(rebuild_module, "REPLAY_BATCH", 30)
        apply = rebuild_module.Replay._apply
        crashed = False

        async def apply_then_crash_once(self, batch):
            nonlocal crashed
            await apply(self, batch)
            if not crashed and self.events >= 60:  # two batches committed (asynchronously)
                crashed = True
                crashable_postgres.kill()  # kill -9, backends included
                await asyncio.to_thread(crashable_postgres.start)
                await asyncio.sleep(0.5)  # the pool sees its old connections closed

        monkeypatch.setattr(rebuild_module.Replay, "_apply", apply_then_crash_once)
        try:
            report = await rebuild_module.rebuild(
                audit.js, pool, AuditProjection("audit_rebuild"), LIVE_SCHEMA, audit.consumer.paused
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, rebuild_module.ReplayGap):
            return  # a rebuild that fails is acceptable: the live schema is untouched
        assert crashed
        assert report.events == 123
        after = await every_row(pool)
        assert {t: len(rows) for t, rows in after.items()} == {t: len(rows) for t, rows in before.items()}
        assert after == before
    finally:
        stop.set()
        await consuming


async def test_a_stream_missing_an_organizations_event_stops_the_rebuild_and_leaves_the_live_rows(clean_nats, crashable_postgres):
    async with audit_on(clean_nats, crashable_postgres) as (audit, pool):
        history = a_team_history("acme")
        for event in history.events[:3] + history.events[4:]:  # the fourth never reached the stream
            await publish(audit.js, event)
        before = await every_row(pool)
        with pytest.raises(rebuild_module.ReplayGap, match="acme"):
            await rebuild_module.rebuild(audit.js, pool, AuditProjection("audit_rebuild"), LIVE_SCHEMA, audit.consumer.paused)
        assert await every_row(pool) == before
