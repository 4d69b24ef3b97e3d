"""The lock between the writers of a live projection and a rebuild's swap of it, across processes.

Every transaction that writes a live projection (a consumer's batch, one event at a time, a retried
dead letter) holds `pg_advisory_xact_lock_shared` on the schema's key from its first statement; the
swap holds it exclusively from before its final catch-up to its commit. The instance pulling the
durable may not be the one rebuilding (rebuild requests go to a queue group): without the lock it
would apply and ack events into the schema the swap then drops. With it, its batch waits for the
swap and applies to the rebuilt schema, whose positions skip what the replay applied.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


def lock_key(schema: str) -> int:
    """The advisory lock key of a live schema: the same in every process."""
    return zlib.crc32(f"live-schema:{schema}".encode())


@asynccontextmanager
async def writing(connection: asyncpg.Connection, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that writes the live projection `schema`, the lock taken shared.

    Begun by one simple query, `BEGIN; SELECT pg_advisory_xact_lock_shared(<key>)`: the lock costs no
    round trip over asyncpg's own `BEGIN` (so no asyncpg `Transaction`; nothing inside nests one)."""
    try:
        await connection.execute(f"BEGIN; SELECT pg_advisory_xact_lock_shared({lock_key(schema)})")
        yield connection
    except BaseException:
        with contextlib.suppress(Exception):  # lost or busy: the pool's reset rolls back, or drops it
            if not connection.is_closed():
                await connection.execute("ROLLBACK")
        raise
    await connection.execute("COMMIT")


async def lock_for_swap(connection: asyncpg.Connection, schema: str) -> None:
    """Inside the swap's transaction: waits for the live writers' transactions, and holds off new ones."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
