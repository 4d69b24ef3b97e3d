"""Schema migrations apply once each, in order, and a new one applies on the next start."""

import asyncpg

from shared.migrations import migrate

FIRST = [(1, "CREATE TABLE {schema}.things (id int PRIMARY KEY)")]
SECOND = [*FIRST, (2, "ALTER TABLE {schema}.things ADD COLUMN name text")]


async def test_each_migration_applies_once_and_new_ones_apply_later(database_url):
    connection = await asyncpg.connect(database_url)
    try:
        assert await migrate(connection, "svc", FIRST) == [1]
        assert await migrate(connection, "svc", FIRST) == []
        assert await migrate(connection, "svc", SECOND) == [2]
        await connection.execute("INSERT INTO svc.things (id, name) VALUES (1, 'x')")
        versions = [r["version"] for r in await connection.fetch("SELECT version FROM svc.schema_migrations ORDER BY version")]
        assert versions == [1, 2]
    finally:
        await connection.close()
