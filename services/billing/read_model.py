"""What billing answers: the ledger, invoices by period, the next bill, and the state of its projection.

Invoices are not stored: an invoice is its period's charges, grouped when asked for. Lists are
paged by keyset (see `paging.py`). An invoice shows at most `INVOICE_LINES_SHOWN` lines (with
`line_count`, `lines_complete` and a `total_cents` over all of them), and a page of invoices ends at
the byte budget, so that no reply outgrows the bus however many seat changes a period holds; every
line is in `billing.query.charges`, paged.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from shared.errors import NotFound
from shared.paging import PAGE_BUDGET_BYTES

from . import paging
from .invoices import current_period, upcoming_invoice
from .ledger import Account, Charge
from .projection import CHARGE_COLUMNS, account_of

INVOICE_LINES_SHOWN = 500
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
        invoices: list[dict[str, Any]] = []
        size = 0
        for start, found in lines.items():
            invoice = _invoice(start, found[0]["billing_period_end"], found, now)
            size += len(msgspec.json.encode(invoice)) + 1
            if invoices and size > PAGE_BUDGET_BYTES:
                break
            invoices.append(invoice)
        more = len(periods) > limit or len(invoices) < len(starts)
        last = invoices[-1]["billing_period_start"] if invoices else None
        return {"invoices": invoices, "next_cursor": paging.invoices_cursor(last) if more and last else None}

    async def upcoming_invoice(self, org_id: str, now: datetime) -> dict[str, Any]:
        async with self.pool.acquire() as connection:
            account = account_of(await self._require_account(connection, org_id))
            this_period = await self._period_charges(connection, account, now)
        invoice = asdict(upcoming_invoice(account, this_period, now))
        return {**invoice, **_shown_lines(invoice["lines"])}

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


def _shown_lines(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The first lines of an invoice, and whether they are all of them (the rest: `billing.query.charges`)."""
    return {"lines": lines[:INVOICE_LINES_SHOWN], "line_count": len(lines), "lines_complete": len(lines) <= INVOICE_LINES_SHOWN}


def _invoice(start: datetime, end: datetime, lines: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    return {
        "billing_period_start": start,
        "billing_period_end": end,
        "status": "closed" if end <= now else "open",
        **_shown_lines(lines),
        "total_cents": sum(line["amount_cents"] for line in lines),
    }
