"""Retention by plan: old entries go in whole ranges, and a checkpoint keeps the chain provable.

The checkpoint holds the `seq` and `hash` of the last entry removed; `verify` continues from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import asyncpg
import structlog

from shared import live_schema
from shared.clock import Clock
from shared.periodic import every

log = structlog.get_logger()

# How long each plan keeps its entries (an unknown plan: the longest); how often the purge runs.
RETENTION_DAYS = {"free": 30, "pro": 30, "enterprise": 365}
PURGE_INTERVAL_SECONDS = 3600.0


async def purge(
    connection: asyncpg.Connection, schema: str, now: datetime, retention_days: dict[str, int] = RETENTION_DAYS
) -> int:
    """Removes, per organization, every entry older than its plan keeps; returns how many. In the caller's
    transaction when there is one (a rebuild's swap, `purge_live`), else in one of its own."""
    removed = 0
    async with contextlib.nullcontext() if connection.is_in_transaction() else connection.transaction():
        await connection.execute("SET LOCAL audit.purge = 'on'")
        for chain in await connection.fetch(f'SELECT org_id, plan FROM "{schema}".chains ORDER BY org_id'):
            cutoff = now - timedelta(days=retention_days.get(chain["plan"], max(retention_days.values())))
            boundary = await connection.fetchrow(
                f'SELECT seq, hash FROM "{schema}".entries WHERE org_id = $1 AND occurred_at < $2 ORDER BY seq DESC LIMIT 1',
                chain["org_id"],
                cutoff,
            )
            if boundary is None:
                continue
            gone = await connection.fetch(
                f'DELETE FROM "{schema}".entries WHERE org_id = $1 AND seq <= $2 RETURNING event_id',
                chain["org_id"],
                boundary["seq"],
            )
            await connection.execute(f'DELETE FROM "{schema}".raw_events WHERE event_id = ANY($1)', [r["event_id"] for r in gone])
            await connection.execute(
                f"""INSERT INTO "{schema}".checkpoints VALUES ($1, $2, $3, $4) ON CONFLICT (org_id)
                    DO UPDATE SET seq = $2, hash = $3, occurred_before = $4""",
                chain["org_id"],
                boundary["seq"],
                boundary["hash"],
                cutoff,
            )
            removed += len(gone)
    if removed:
        log.info("audit entries past retention removed", count=removed)
    return removed


async def purge_live(connection: asyncpg.Connection, schema: str, now: datetime) -> int:
    """`purge` of the live log, under the live schema's lock: a purge a rebuild's swap dropped would
    bring expired entries back until the next one."""
    async with live_schema.writing(connection, schema):
        return await purge(connection, schema, now)


class RetentionScheduler:
    def __init__(self, pool: asyncpg.Pool, schema: str, clock: Clock, interval: float = PURGE_INTERVAL_SECONDS) -> None:
        self.pool = pool
        self.schema = schema
        self.clock = clock
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        """A purge now and every `interval` seconds, until `stop` is set."""
        await every(self.interval, self.purge, stop, failed="retention purge failed; trying again later")

    async def purge(self) -> int:
        async with self.pool.acquire() as connection:
            return await purge_live(connection, self.schema, self.clock.now())
