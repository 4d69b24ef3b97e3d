"""PostgreSQL plumbing shared by the services (asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def single_active(database_url: str, lock_key: int, retry_seconds: float = 1.0) -> AsyncIterator[asyncpg.Connection]:
    """Holds a session advisory lock: one holder at a time across every instance.

    The lock lives as long as the yielded connection; a lost connection means a lost lock.
    """
    while True:
        connection = await asyncpg.connect(database_url)
        try:
            if await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):
                yield connection
                return
        finally:
            await connection.close()
        await asyncio.sleep(retry_seconds)
