"""The audit log in PostgreSQL: append-only entries, one hash chain per organization, raw events.

The database itself refuses UPDATE and DELETE on entries, unless the transaction says it is the
retention purge (`SET LOCAL audit.purge = 'on'`, which only `retention.py` does).
"""

from __future__ import annotations

from typing import Any, ClassVar

import asyncpg
import msgspec

from shared.consumer import Moved, PositionedBatch, locked_positions_sql, moved_positions_sql
from shared.contract.events import Envelope
from shared.migrations import migrate

from .entries import GENESIS_HASH, chained_entry, stored_json

LIVE_SCHEMA = "audit"
ENTRY_COLUMNS = (
    "entry_id",
    "org_id",
    "seq",
    "occurred_at",
    "action",
    "actor",
    "targets",
    "metadata",
    "event_id",
    "command_id",
    "correlation_id",
    "prev_hash",
    "hash",
)
JSON_COLUMNS = ("actor", "targets", "metadata")
OCCURRED_AT = ENTRY_COLUMNS.index("occurred_at")
JSON_AT = tuple(ENTRY_COLUMNS.index(column) for column in JSON_COLUMNS)
CHAIN_COLUMNS = ("org_id", "plan", "last_seq", "last_hash", "latest_occurred_at", "in_time_order")
# What search reads entries by. A rebuild's replay writes the entries without them and builds each once
# afterwards (`shared/rebuild.py`): a sort per index instead of an insertion per entry into each (the
# GIN one the dearest). The unique ones stay: they guard the chain while it is written.
SEARCH_INDEXES = {
    "entries_by_time": "CREATE INDEX entries_by_time ON {schema}.entries (org_id, occurred_at)",
    "entries_by_action": "CREATE INDEX entries_by_action ON {schema}.entries (org_id, action, seq)",
    "entries_by_actor": "CREATE INDEX entries_by_actor ON {schema}.entries (org_id, (actor->>'id'), seq)",
    "entries_by_target": "CREATE INDEX entries_by_target ON {schema}.entries USING gin (targets jsonb_path_ops)",
}

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE {schema}.entries (
            entry_id text PRIMARY KEY,
            org_id text NOT NULL,
            seq bigint NOT NULL,
            occurred_at timestamptz NOT NULL,
            action text NOT NULL,
            actor jsonb NOT NULL,
            targets jsonb NOT NULL,
            metadata jsonb NOT NULL,
            event_id text NOT NULL UNIQUE,
            command_id text,
            correlation_id text,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            UNIQUE (org_id, seq)
        );
        """
        + ";\n".join(SEARCH_INDEXES.values())
        + """;
        CREATE TABLE {schema}.chains (
            org_id text PRIMARY KEY,
            plan text NOT NULL,
            last_seq bigint NOT NULL,
            last_hash text NOT NULL
        );
        CREATE TABLE {schema}.checkpoints (
            org_id text PRIMARY KEY,
            seq bigint NOT NULL,
            hash text NOT NULL,
            occurred_before timestamptz NOT NULL
        );
        CREATE TABLE {schema}.raw_events (
            event_id text PRIMARY KEY,
            org_id text NOT NULL,
            body text NOT NULL
        );
        CREATE FUNCTION {schema}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('audit.purge', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP;
        END $$;
        CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON {schema}.entries
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
        CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON {schema}.entries
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
        CREATE TRIGGER raw_events_append_only BEFORE UPDATE OR DELETE ON {schema}.raw_events
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
        """,
    ),
    (
        2,
        # Whether an organization's entries were appended in time order: search may then bound
        # `seq` by its time window. A retried dead letter arrives late with its old `occurred_at`.
        """
        ALTER TABLE {schema}.chains
            ADD COLUMN latest_occurred_at timestamptz,
            ADD COLUMN in_time_order boolean NOT NULL DEFAULT true;
        UPDATE {schema}.chains c SET
            latest_occurred_at = (SELECT max(occurred_at) FROM {schema}.entries e WHERE e.org_id = c.org_id),
            in_time_order = NOT EXISTS (
                SELECT 1 FROM (
                    SELECT occurred_at < max(occurred_at) OVER (
                        ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS behind
                    FROM {schema}.entries e WHERE e.org_id = c.org_id
                ) appended WHERE appended.behind
            );
        """,
    ),
    (
        3,
        # Every membership `sequence` the chain took in, kept past retention: `verify` compares it
        # with how far the consumer went (`positions`) and names the events that never arrived.
        # Entries purged before this table existed count as taken in: their absence is retention's.
        """
        CREATE TABLE {schema}.recorded_sequences (
            org_id text NOT NULL,
            sequence bigint NOT NULL,
            PRIMARY KEY (org_id, sequence)
        );
        INSERT INTO {schema}.recorded_sequences
            SELECT org_id, (body::jsonb->>'sequence')::bigint FROM {schema}.raw_events;
        INSERT INTO {schema}.recorded_sequences
            SELECT c.org_id, purged.sequence
            FROM {schema}.checkpoints c
            LEFT JOIN {schema}.positions p ON p.org_id = c.org_id
            CROSS JOIN LATERAL generate_series(
                1,
                coalesce((SELECT min(r.sequence) - 1 FROM {schema}.recorded_sequences r WHERE r.org_id = c.org_id),
                         p.last_sequence, 0)
            ) AS purged(sequence)
            ON CONFLICT DO NOTHING;
        """,
    ),
    (
        4,
        # Each entry was indexed three times over as unique: by `entry_id` (the primary key), by
        # `event_id` and by `(org_id, seq)`. Nothing looks an entry up by either id, `entry_id` is
        # `aud_<event_id>`, and `raw_events`, written in the same statement, refuses an `event_id`
        # twice: two b-tree insertions of a 40-character key per entry that guarded nothing more.
        # `(org_id, seq)`, the chain's own order, becomes the primary key (its index built once, here).
        """
        ALTER TABLE {schema}.entries
            DROP CONSTRAINT entries_pkey,
            DROP CONSTRAINT entries_event_id_key,
            DROP CONSTRAINT entries_org_id_seq_key,
            ADD CONSTRAINT entries_pkey PRIMARY KEY (org_id, seq);
        """,
    ),
]


class AuditProjection:
    deferred_indexes: ClassVar[dict[str, str]] = SEARCH_INDEXES
    # The live consumer's largest batch (`shared/projector.py`): a batch is a handful of statements whatever
    # its size, so catching up goes in fewer transactions; a consumer that keeps up still gets small ones.
    consumer_batch: ClassVar[int] = 500

    def __init__(self, schema: str = LIVE_SCHEMA) -> None:
        self.schema = schema

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await migrate(connection, self.schema, MIGRATIONS)

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        """Extends each organization's chain in memory, then writes the batch in one statement.

        The chain heads are locked (`FOR UPDATE`) for the transaction the consumer holds, so the
        hashes computed here continue exactly what is stored; the statement writes entries, raw
        events, recorded sequences and the new heads together, or the transaction writes nothing."""
        chains = await self._chains(connection, {event.org_id for event in events})
        await self._append(connection, chains, events)

    async def apply_positioned(self, connection: asyncpg.Connection, batch: PositionedBatch) -> None:
        """As `apply`, in two statements with the consumer's positions: read (locked) with the chain
        heads, written with the entries."""
        rows = await connection.fetch(positioned_chains_sql(self.schema), batch.org_ids)
        events = batch.sort_out({row["org_id"]: row["last_sequence"] for row in rows if row["last_sequence"] is not None})
        chains = {row["org_id"]: {column: row[column] for column in CHAIN_COLUMNS} for row in rows if row["plan"] is not None}
        await self._append(connection, chains, events, batch.moved())

    async def _append(
        self, connection: asyncpg.Connection, chains: dict[str, dict[str, Any]], events: list[Envelope], moved: Moved = ([], [])
    ) -> None:
        batch = AppendBatch()
        for event in events:
            chain = chains.setdefault(event.org_id, new_chain())
            if event.event_type in ("OrganizationCreated", "PlanChanged"):
                chain["plan"] = event.data.get("plan") or event.data.get("to_plan") or chain["plan"]
            entry, holds_float = chained_entry(event, chain["last_seq"] + 1, chain["last_hash"])
            chain["last_seq"], chain["last_hash"] = entry["seq"], entry["hash"]
            latest = chain["latest_occurred_at"]
            if latest is not None and event.occurred_at < latest:
                chain["in_time_order"] = False
            chain["latest_occurred_at"] = event.occurred_at if latest is None else max(latest, event.occurred_at)
            batch.add(entry, event, holds_float)
        if batch.events:
            await connection.execute(append_sql(self.schema), *batch.arrays(chains), *moved)

    async def _chains(self, connection: asyncpg.Connection, org_ids: set[str]) -> dict[str, dict[str, Any]]:
        rows = await connection.fetch(_locked_chains_sql(self.schema), list(org_ids))
        return {row["org_id"]: dict(row) for row in rows}


def _locked_chains_sql(schema: str) -> str:
    return f'SELECT {", ".join(CHAIN_COLUMNS)} FROM "{schema}".chains WHERE org_id = ANY($1::text[]) FOR UPDATE'


def positioned_chains_sql(schema: str) -> str:
    """The positions and chain heads of the organizations in `$1`, locked, in one statement: a row per
    organization with either, `last_sequence` null without a position, `plan` null without a chain.

    Materialized and fully joined, each side is read whole, so every row of either is locked."""
    return f"""
        WITH positions AS MATERIALIZED ({locked_positions_sql(schema, 1)}),
        chains AS MATERIALIZED ({_locked_chains_sql(schema)})
        SELECT * FROM positions FULL JOIN chains USING (org_id)"""


def new_chain() -> dict[str, Any]:
    return {"plan": "free", "last_seq": 0, "last_hash": GENESIS_HASH, "latest_occurred_at": None, "in_time_order": True}


class AppendBatch:
    """A batch's rows as one array per column: `unnest` turns them back into rows in PostgreSQL."""

    def __init__(self) -> None:
        self.events = 0
        self.entry_columns: list[list[Any]] = [[] for _ in ENTRY_COLUMNS]
        self.raw_bodies: list[str] = []
        self.sequences: list[int] = []

    def add(self, entry: dict[str, Any], event: Envelope, holds_float: bool) -> None:
        self.events += 1
        row = [entry[column] for column in ENTRY_COLUMNS]
        row[OCCURRED_AT] = event.occurred_at
        for at in JSON_AT:
            row[at] = stored_json(row[at], holds_float)
        for values, value in zip(self.entry_columns, row, strict=True):
            values.append(value)
        self.raw_bodies.append(msgspec.json.encode(event).decode())
        self.sequences.append(event.sequence)

    def arrays(self, chains: dict[str, dict[str, Any]]) -> list[list[Any]]:
        heads = [[org_id for org_id in chains], *([chain[column] for chain in chains.values()] for column in CHAIN_COLUMNS[1:])]
        return [*self.entry_columns, self.raw_bodies, self.sequences, *heads]


ENTRY_TYPES = {"seq": "bigint", "occurred_at": "timestamptz"}
CHAIN_TYPES = {"last_seq": "bigint", "latest_occurred_at": "timestamptz", "in_time_order": "boolean"}


def append_sql(schema: str) -> str:
    """One round trip for a batch: its entries, raw events and recorded sequences, and the chains' new heads.

    Parameters: one array per entry column ($1..$13), the raw bodies, the membership sequences,
    then one array per chain column, then the consumer's positions (organizations, sequences; may be empty)."""
    entries = len(ENTRY_COLUMNS)
    org_id, event_id = ENTRY_COLUMNS.index("org_id") + 1, ENTRY_COLUMNS.index("event_id") + 1
    body, sequence = entries + 1, entries + 2
    entry_arrays = ", ".join(f"${n}::{ENTRY_TYPES.get(c, 'text')}[]" for n, c in enumerate(ENTRY_COLUMNS, 1))
    entry_values = ", ".join(f"e.{c}::jsonb" if c in JSON_COLUMNS else f"e.{c}" for c in ENTRY_COLUMNS)
    chain_arrays = ", ".join(f"${n}::{CHAIN_TYPES.get(c, 'text')}[]" for n, c in enumerate(CHAIN_COLUMNS, entries + 3))
    positions = entries + 3 + len(CHAIN_COLUMNS)
    return f"""
        WITH appended AS (
            INSERT INTO "{schema}".entries ({", ".join(ENTRY_COLUMNS)})
            SELECT {entry_values} FROM unnest({entry_arrays}) AS e({", ".join(ENTRY_COLUMNS)})
        ), received AS (
            INSERT INTO "{schema}".raw_events (event_id, org_id, body)
            SELECT * FROM unnest(${event_id}::text[], ${org_id}::text[], ${body}::text[])
        ), recorded AS (
            INSERT INTO "{schema}".recorded_sequences (org_id, sequence)
            SELECT * FROM unnest(${org_id}::text[], ${sequence}::bigint[])
        ), moved AS (
            {moved_positions_sql(schema, positions, positions + 1)}
        )
        INSERT INTO "{schema}".chains ({", ".join(CHAIN_COLUMNS)})
        SELECT * FROM unnest({chain_arrays})
        ON CONFLICT (org_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in CHAIN_COLUMNS[1:])}"""
