"""The billing read model in PostgreSQL: accounts, the charges ledger, and mismatches found.

Invoices are not stored: an invoice is its period's charges, grouped when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import ClassVar

import asyncpg
import structlog

from shared.consumer import Moved, PositionedBatch, locked_positions_sql, moved_positions_sql
from shared.contract.events import Envelope
from shared.migrations import migrate

from .ledger import Account, Charge, Entry, Mismatch, charge_renewals_until, record

LIVE_SCHEMA = "billing"
# Each column of `charges` and its type, for the arrays a batch's charges are inserted from.
CHARGE_TYPES = {
    "charge_id": "text",
    "org_id": "text",
    "kind": "text",
    "quantity": "integer",
    "unit_price_cents": "integer",
    "amount_cents": "bigint",
    "billing_period_start": "timestamptz",
    "billing_period_end": "timestamptz",
    "occurred_at": "timestamptz",
    "event_id": "text",
}
CHARGE_COLUMNS = tuple(CHARGE_TYPES)

log = structlog.get_logger()

CHARGES_BY_ORG = "CREATE INDEX charges_by_org ON {schema}.charges (org_id, occurred_at, charge_id)"
MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE {schema}.accounts (
            org_id text PRIMARY KEY,
            plan text NOT NULL,
            billing_anchor timestamptz NOT NULL,
            unit_price_cents integer NOT NULL,
            seats_purchased integer NOT NULL,
            renewed_through timestamptz NOT NULL,
            next_period_start timestamptz NOT NULL,
            last_seat_event_id text
        );
        CREATE INDEX accounts_due ON {schema}.accounts (next_period_start);
        CREATE TABLE {schema}.charges (
            charge_id text PRIMARY KEY,
            org_id text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('seat_proration', 'seat_credit', 'seat_renewal')),
            quantity integer NOT NULL,
            unit_price_cents integer NOT NULL,
            amount_cents bigint NOT NULL,
            billing_period_start timestamptz NOT NULL,
            billing_period_end timestamptz NOT NULL,
            occurred_at timestamptz NOT NULL,
            event_id text
        );
        """
        + CHARGES_BY_ORG
        + """;
        CREATE TABLE {schema}.mismatches (
            event_id text PRIMARY KEY,
            org_id text NOT NULL,
            recorded_cents bigint NOT NULL,
            expected_cents bigint NOT NULL,
            reason text NOT NULL
        );
        """,
    ),
]


class BillingProjection:
    # The ledger reads only `typed_data()`: the consumer decodes the data straight into its struct.
    typed_events = True
    # A rebuild's replay writes the ledger without this index and builds it once afterwards
    # (`shared/rebuild.py`): one sort instead of a b-tree insertion per charge. Migration 1's own.
    deferred_indexes: ClassVar[dict[str, str]] = {"charges_by_org": CHARGES_BY_ORG}
    # The live consumer's largest batch (`shared/projector.py`): a batch is a handful of statements whatever
    # its size, so catching up goes in fewer transactions; a consumer that keeps up still gets small ones.
    consumer_batch: ClassVar[int] = 500

    def __init__(self, schema: str = LIVE_SCHEMA) -> None:
        self.schema = schema

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await migrate(connection, self.schema, MIGRATIONS)

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        accounts = await self.accounts(connection, {event.org_id for event in events})
        await self.write(connection, _recorded(accounts, events), accounts)

    async def apply_positioned(self, connection: asyncpg.Connection, batch: PositionedBatch) -> None:
        """A batch in two statements: the positions and accounts read (locked) together, then the
        charges, accounts and positions written together."""
        rows = await connection.fetch(positioned_accounts_sql(self.schema), batch.org_ids)
        events = batch.sort_out({row["org_id"]: row["last_sequence"] for row in rows if row["last_sequence"] is not None})
        accounts = {row["org_id"]: account_of(row) for row in rows if row["plan"] is not None}
        await self.write(connection, _recorded(accounts, events), accounts, batch.moved())

    async def due(self, connection: asyncpg.Connection, until: datetime) -> dict[str, int]:
        """Organizations with a period started by `until` and not renewed, and the last sequence applied for each."""
        rows = await connection.fetch(
            f"""SELECT a.org_id, coalesce(p.last_sequence, 0) AS last_sequence FROM "{self.schema}".accounts a
                LEFT JOIN "{self.schema}".positions p USING (org_id) WHERE a.next_period_start <= $1 ORDER BY a.org_id""",
            until,
        )
        return {row["org_id"]: row["last_sequence"] for row in rows}

    async def renew(self, connection: asyncpg.Connection, until: datetime, org_ids: list[str] | None = None) -> int:
        """Charges every renewal due by `until` (of `org_ids` only, when given), whether or not an event has come since."""
        rows = await connection.fetch(
            f"""SELECT * FROM "{self.schema}".accounts WHERE next_period_start <= $1
                AND ($2::text[] IS NULL OR org_id = ANY($2)) ORDER BY org_id FOR UPDATE""",
            until,
            org_ids,
        )
        accounts = {row["org_id"]: account_of(row) for row in rows}
        entries = [Entry(account, charge_renewals_until(account, until)) for account in accounts.values()]
        await self.write(connection, entries, accounts)
        return sum(len(entry.charges) for entry in entries)

    async def accounts(self, connection: asyncpg.Connection, org_ids: set[str]) -> dict[str, Account]:
        rows = await connection.fetch(f'SELECT * FROM "{self.schema}".accounts WHERE org_id = ANY($1) FOR UPDATE', list(org_ids))
        return {row["org_id"]: account_of(row) for row in rows}

    async def write(
        self, connection: asyncpg.Connection, entries: list[Entry], accounts: dict[str, Account], moved: Moved = ([], [])
    ) -> None:
        """The entries' charges and accounts, and the consumer's `moved` positions, if any."""
        charges, withdrawn = _net_charges(entries)
        if withdrawn:
            await connection.executemany(
                f"""DELETE FROM "{self.schema}".charges
                    WHERE org_id = $1 AND kind = 'seat_renewal' AND billing_period_start > $2""",
                withdrawn,
            )
        mismatches = [mismatch for entry in entries for mismatch in entry.mismatches]
        if mismatches:
            await self._record_mismatches(connection, mismatches)
        touched = sorted({entry.account.org_id for entry in entries if entry.account is not None})
        if charges or touched or moved[0]:  # one statement for the batch's charges, accounts and positions
            charge_rows = [_row(charge) for charge in charges]
            account_rows = [_account_row(accounts[org_id]) for org_id in touched]
            await connection.execute(
                write_sql(self.schema),
                *_columns(charge_rows, len(CHARGE_COLUMNS)),
                *_columns(account_rows, len(ACCOUNT_TYPES)),
                *moved,
            )

    async def _record_mismatches(self, connection: asyncpg.Connection, mismatches: list[Mismatch]) -> None:
        for mismatch in mismatches:
            log.warning("charge differs from the pricing rule", **vars(mismatch))
        await connection.executemany(
            f'INSERT INTO "{self.schema}".mismatches VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
            [(m.event_id, m.org_id, m.recorded_cents, m.expected_cents, m.reason) for m in mismatches],
        )


ACCOUNT_TYPES = {
    "org_id": "text",
    "plan": "text",
    "billing_anchor": "timestamptz",
    "unit_price_cents": "integer",
    "seats_purchased": "integer",
    "renewed_through": "timestamptz",
    "next_period_start": "timestamptz",
    "last_seat_event_id": "text",
}


def positioned_accounts_sql(schema: str) -> str:
    """The positions and accounts of the organizations in `$1`, locked, in one statement: a row per
    organization with either, `last_sequence` null without a position, `plan` null without an account.

    Materialized and fully joined, each side is read whole, so every row of either is locked."""
    return f"""
        WITH positions AS MATERIALIZED ({locked_positions_sql(schema, 1)}),
        accounts AS MATERIALIZED (SELECT * FROM "{schema}".accounts WHERE org_id = ANY($1::text[]) FOR UPDATE)
        SELECT * FROM positions FULL JOIN accounts USING (org_id)"""


def write_sql(schema: str) -> str:
    """A batch's charges inserted, its accounts and the consumer's positions written in one statement
    (one round trip, not three).

    Parameters: one array per charge column, then one per account column, then the positions' organizations
    and sequences; any side may be empty. A COPY of the charges would cost two exchanges of its own
    (the columns' types, then the data)."""
    charge_arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(CHARGE_TYPES.values(), 1))
    account_arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(ACCOUNT_TYPES.values(), len(CHARGE_TYPES) + 1))
    positions = len(CHARGE_TYPES) + len(ACCOUNT_TYPES) + 1
    return f"""
        WITH charged AS (
            INSERT INTO "{schema}".charges ({", ".join(CHARGE_COLUMNS)}) SELECT * FROM unnest({charge_arrays})
        ), moved AS (
            {moved_positions_sql(schema, positions, positions + 1)}
        )
        INSERT INTO "{schema}".accounts AS a ({", ".join(ACCOUNT_TYPES)}) SELECT * FROM unnest({account_arrays})
        ON CONFLICT (org_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in list(ACCOUNT_TYPES)[1:])}"""


def _recorded(accounts: dict[str, Account], events: list[Envelope]) -> list[Entry]:
    """Each event's ledger entry, in order; `accounts` follows them."""
    entries = []
    for event in events:
        entry = record(accounts.get(event.org_id), event)
        if entry.account is not None:
            accounts[event.org_id] = entry.account
        entries.append(entry)
    return entries


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows as one list per column (as many empty lists as columns when there are no rows)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _net_charges(entries: list[Entry]) -> tuple[list[Charge], list[tuple[str, datetime]]]:
    """The charges to insert, and the (org, instant) after which stored renewals are withdrawn first."""
    charges: list[Charge] = []
    withdrawn = []
    for entry in entries:
        after = entry.withdraws_renewals_after
        if entry.account is not None and after is not None:
            org_id = entry.account.org_id
            charges = [
                c for c in charges if not (c.org_id == org_id and c.kind == "seat_renewal" and c.billing_period_start > after)
            ]
            withdrawn.append((org_id, after))
        charges += entry.charges
    return charges, withdrawn


_row: Callable[[Charge], tuple] = attrgetter(*CHARGE_COLUMNS)  # a charge's values in column order, in one call


def account_of(row: asyncpg.Record) -> Account:
    return Account(
        org_id=row["org_id"],
        plan=row["plan"],
        billing_anchor=row["billing_anchor"],
        unit_price_cents=row["unit_price_cents"],
        seats_purchased=row["seats_purchased"],
        renewed_through=row["renewed_through"],
        last_seat_event_id=row["last_seat_event_id"],
    )


def _account_row(account: Account) -> tuple:
    return (
        account.org_id,
        account.plan,
        account.billing_anchor,
        account.unit_price_cents,
        account.seats_purchased,
        account.renewed_through,
        account.next_period_start,
        account.last_seat_event_id,
    )
