"""Versioned schema migrations for a service's own PostgreSQL schema.

Each migration is applied once, in order, and remembered in `<schema>.schema_migrations`; the
advisory lock keeps two instances starting together from applying the same step twice.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import asyncpg

Migration = tuple[int, str]  # (version, SQL with {schema} for the schema's name)


async def migrate(connection: asyncpg.Connection, schema: str, migrations: Sequence[Migration]) -> list[int]:
    """Applies the migrations this schema has not had yet; returns their versions."""
    applied_now = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(schema.encode()))
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await connection.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        for version, sql in sorted(migrations):
            if version not in done:
                await connection.execute(sql.format(schema=f'"{schema}"'))
                await connection.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version)
                applied_now.append(version)
    return applied_now
