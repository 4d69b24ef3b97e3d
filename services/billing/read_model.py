"""What billing answers: the ledger, invoices by period, and the state of its projection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared import pricing
from shared.errors import NotFound

from .projection import CHARGE_COLUMNS


class BillingReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def charges(self, org_id: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as connection:
            await self._require_account(connection, org_id)
            return await self._charges(connection, org_id)

    async def invoices(self, org_id: str, now: datetime) -> list[dict[str, Any]]:
        async with self.pool.acquire() as connection:
            await self._require_account(connection, org_id)
            charges = await self._charges(connection, org_id)
        periods: dict[datetime, list[dict[str, Any]]] = {}
        for charge in charges:
            periods.setdefault(charge["billing_period_start"], []).append(charge)
        return [_invoice(lines[0]["billing_period_start"], lines[0]["billing_period_end"], lines, now) for _, lines in sorted(periods.items())]

    async def upcoming_invoice(self, org_id: str, now: datetime) -> dict[str, Any]:
        async with self.pool.acquire() as connection:
            account = await self._require_account(connection, org_id)
            start, end = pricing.billing_period(account["billing_anchor"], now)
            lines = [c for c in await self._charges(connection, org_id) if c["billing_period_start"] == start]
        invoice = _invoice(start, end, lines, now)
        del invoice["status"]
        return invoice

    async def mismatch_count(self) -> int:
        async with self.pool.acquire() as connection:
            return await connection.fetchval(f'SELECT count(*) FROM "{self.schema}".mismatches')

    async def _require_account(self, connection: asyncpg.Connection, org_id: str) -> asyncpg.Record:
        account = await connection.fetchrow(f'SELECT * FROM "{self.schema}".accounts WHERE org_id = $1', org_id)
        if account is None:
            raise NotFound(f"billing knows no organization {org_id}")
        return account

    async def _charges(self, connection: asyncpg.Connection, org_id: str) -> list[dict[str, Any]]:
        rows = await connection.fetch(
            f'SELECT {", ".join(CHARGE_COLUMNS)} FROM "{self.schema}".charges WHERE org_id = $1 ORDER BY occurred_at, charge_id',
            org_id,
        )
        return [dict(row) for row in rows]


def _invoice(start: datetime, end: datetime, lines: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    return {
        "billing_period_start": start,
        "billing_period_end": end,
        "status": "closed" if end <= now else "open",
        "lines": lines,
        "total_cents": sum(line["amount_cents"] for line in lines),
    }
