"""What the notifier answers: the delivery log of an organization."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.errors import NotFound


class NotifierReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def deliveries(self, org_id: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as connection:
            known = await connection.fetchval(f'SELECT 1 FROM "{self.schema}".organizations WHERE org_id = $1', org_id)
            if known is None:
                raise NotFound(f"the notifier knows no organization {org_id}")
            rows = await connection.fetch(
                f"""SELECT event_id, recipient AS "to", status, attempts, invitation_id, kind, reason, last_error,
                           sent_at, next_attempt_at, occurred_at
                    FROM "{self.schema}".deliveries WHERE org_id = $1 ORDER BY occurred_at, event_id""",
                org_id,
            )
        return [dict(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(f'SELECT status, count(*) AS n FROM "{self.schema}".deliveries GROUP BY status')
        return {row["status"]: row["n"] for row in rows}
