"""What billing answers: the ledger, invoices by period, the next bill, and the state of its projection.

Invoices are not stored: an invoice is its period's charges, grouped when asked for. Lists are
paged by keyset (see `paging.py`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg

from shared.errors import NotFound

from . import paging
from .invoices import current_period, upcoming_invoice
from .ledger import Account, Charge
from .projection import CHARGE_COLUMNS, account_of

_SELECT_CHARGES = f'SELECT {", ".join(CHARGE_COLUMNS)} FROM "{{schema}}".charges'


class BillingReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def charges(self, org_id: str, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        after = paging.charges_position(cursor)
        async with self.pool.acquire() as connection:
            await self._require_account(connection, org_id)
            rows = await connection.fetch(
                _SELECT_CHARGES.format(schema=self.schema)
                + """ WHERE org_id = $1 AND ($2::timestamptz IS NULL OR (occurred_at, charge_id) > ($2, $3))
                      ORDER BY occurred_at, charge_id LIMIT $4""",
                org_id,
                after[0] if after else None,
                after[1] if after else "",
                limit + 1,
            )
        page = [dict(row) for row in rows[:limit]]
        more = len(rows) > limit
        return {
            "charges": page,
            "next_cursor": paging.charges_cursor(page[-1]["occurred_at"], page[-1]["charge_id"]) if more else None,
        }

    async def invoices(self, org_id: str, now: datetime, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        after = paging.invoices_position(cursor)
        async with self.pool.acquire() as connection:
            await self._require_account(connection, org_id)
            periods = await connection.fetch(
                f"""SELECT DISTINCT billing_period_start FROM "{self.schema}".charges
                    WHERE org_id = $1 AND ($2::timestamptz IS NULL OR billing_period_start > $2)
                    ORDER BY billing_period_start LIMIT $3""",
                org_id,
                after,
                limit + 1,
            )
            starts = [row["billing_period_start"] for row in periods[:limit]]
            rows = await connection.fetch(
                _SELECT_CHARGES.format(schema=self.schema)
                + " WHERE org_id = $1 AND billing_period_start = ANY($2) ORDER BY occurred_at, charge_id",
                org_id,
                starts,
            )
        lines: dict[datetime, list[dict[str, Any]]] = {start: [] for start in starts}
        for row in rows:
            lines[row["billing_period_start"]].append(dict(row))
        invoices = [_invoice(start, found[0]["billing_period_end"], found, now) for start, found in lines.items()]
        more = len(periods) > limit
        return {"invoices": invoices, "next_cursor": paging.invoices_cursor(starts[-1]) if more else None}

    async def upcoming_invoice(self, org_id: str, now: datetime) -> dict[str, Any]:
        async with self.pool.acquire() as connection:
            account = account_of(await self._require_account(connection, org_id))
            this_period = await self._period_charges(connection, account, now)
        invoice = upcoming_invoice(account, this_period, now)
        return asdict(invoice)

    async def mismatch_count(self) -> int:
        async with self.pool.acquire() as connection:
            return await connection.fetchval(f'SELECT count(*) FROM "{self.schema}".mismatches')

    async def _require_account(self, connection: asyncpg.Connection, org_id: str) -> asyncpg.Record:
        account = await connection.fetchrow(f'SELECT * FROM "{self.schema}".accounts WHERE org_id = $1', org_id)
        if account is None:
            raise NotFound(f"billing knows no organization {org_id}")
        return account

    async def _period_charges(self, connection: asyncpg.Connection, account: Account, now: datetime) -> list[Charge]:
        start, _ = current_period(account, now)
        rows = await connection.fetch(
            _SELECT_CHARGES.format(schema=self.schema)
            + " WHERE org_id = $1 AND billing_period_start = $2 AND kind <> 'seat_renewal' ORDER BY occurred_at, charge_id",
            account.org_id,
            start,
        )
        return [Charge(**dict(row)) for row in rows]


def _invoice(start: datetime, end: datetime, lines: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    return {
        "billing_period_start": start,
        "billing_period_end": end,
        "status": "closed" if end <= now else "open",
        "lines": lines,
        "total_cents": sum(line["amount_cents"] for line in lines),
    }
