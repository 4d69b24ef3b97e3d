"""The audit log in PostgreSQL: append-only entries, one hash chain per organization, raw events.

The database itself refuses UPDATE and DELETE on entries, unless the transaction says it is the
retention purge (`SET LOCAL audit.purge = 'on'`, which only `retention.py` does).
"""

from __future__ import annotations

import asyncio
import contextlib
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
# Rows per statement of a batch: small enough that building the next chunk overlaps most of a batch's
# writing, large enough that a statement's own cost (about 40 µs in PostgreSQL) stays small beside its rows'.
APPEND_CHUNK = 250
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
        """Extends each organization's chain in memory, then writes the batch (`_append`).

        The chain heads are locked (`FOR UPDATE`) for the transaction the consumer holds, so the
        hashes computed here continue exactly what is stored; the statements write entries, raw
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
        """Writes the batch in chunks, each chunk's statement running in PostgreSQL while the next chunk's
        entries are built here: the hashing and PostgreSQL's inserts take turns on two cores, not one.
        Each statement carries the heads its chunk moved; the last one the consumer's positions."""
        sql = append_sql(self.schema)
        writing: asyncio.Future[str] | None = None
        try:
            for start in range(0, len(events), APPEND_CHUNK):
                batch = _chunk(chains, events[start : start + APPEND_CHUNK])
                last = start + APPEND_CHUNK >= len(events)
                arguments = (*batch.arguments(chains), *(moved if last else ([], [])))
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(connection.execute(sql, *arguments))
                if not last:
                    await asyncio.sleep(0)  # the statement goes out before the next chunk is built
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():  # building a chunk failed: the statement in flight ends first
                with contextlib.suppress(Exception):
                    await writing

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


def _chunk(chains: dict[str, dict[str, Any]], events: list[Envelope]) -> AppendBatch:
    """Extends the chains in memory by `events`: their entries and raw events, and the heads they moved."""
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
    return batch


class AppendBatch:
    """A batch's rows as one JSON array of arrays, one text parameter: PostgreSQL takes it apart
    (`jsonb_array_elements`). asyncpg encodes an array parameter element by element, two `isinstance`
    checks against `collections.abc` each, which cost more than building the entries did."""

    def __init__(self) -> None:
        self.events = 0
        self.rows: list[tuple[Any, ...]] = []
        self.bodies: list[str] = []
        self.org_ids: dict[str, None] = {}

    def add(self, entry: dict[str, Any], event: Envelope, holds_float: bool) -> None:
        self.events += 1
        actor, targets, metadata = entry["actor"], entry["targets"], entry["metadata"]
        if holds_float:  # the float's spelling as in the hash (`stored_json`), not msgspec's
            actor, targets, metadata = (msgspec.Raw(stored_json(part, True).encode()) for part in (actor, targets, metadata))
        self.rows.append(
            (
                entry["entry_id"],
                entry["org_id"],
                entry["seq"],
                entry["occurred_at"],
                entry["action"],
                actor,
                targets,
                metadata,
                entry["event_id"],
                entry["command_id"],
                entry["correlation_id"],
                entry["prev_hash"],
                entry["hash"],
                event.sequence,
            )
        )
        self.bodies.append(_encode(event).decode())
        self.org_ids[event.org_id] = None

    def arguments(self, chains: dict[str, dict[str, Any]]) -> list[Any]:
        """The rows' document, then the heads (as they stand now) of the chains this batch extended."""
        moved = [chains[org_id] for org_id in self.org_ids]
        heads = [list(self.org_ids), *([chain[column] for chain in moved] for column in CHAIN_COLUMNS[1:])]
        return [_encode(self.rows).decode(), self.bodies, *heads]


_encode = msgspec.json.Encoder().encode
ENTRY_TYPES = {"seq": "bigint", "occurred_at": "timestamptz"}
CHAIN_TYPES = {"last_seq": "bigint", "latest_occurred_at": "timestamptz", "in_time_order": "boolean"}


def append_sql(schema: str) -> str:
    """One statement for a chunk of a batch: its entries, raw events and recorded sequences, and the chains' new heads.

    Parameters: the rows (a JSON array: per row the entry's columns in `ENTRY_COLUMNS` order, the raw
    body, the membership sequence), then one array per chain column, then the consumer's positions
    (organizations, sequences; may be empty)."""
    sequence = len(ENTRY_COLUMNS)
    entry_values = ", ".join(
        f"r->{n}" if c in JSON_COLUMNS else f"(r->>{n})::{ENTRY_TYPES[c]}" if c in ENTRY_TYPES else f"r->>{n}"
        for n, c in enumerate(ENTRY_COLUMNS)
    )
    org_id, event_id = ENTRY_COLUMNS.index("org_id"), ENTRY_COLUMNS.index("event_id")
    chain_arrays = ", ".join(f"${n}::{CHAIN_TYPES.get(c, 'text')}[]" for n, c in enumerate(CHAIN_COLUMNS, 3))
    positions = 3 + len(CHAIN_COLUMNS)
    return f"""
        WITH batch AS MATERIALIZED (
            SELECT r, body FROM ROWS FROM (jsonb_array_elements($1::jsonb), unnest($2::text[])) AS rows(r, body)
        ), appended AS (
            INSERT INTO "{schema}".entries ({", ".join(ENTRY_COLUMNS)})
            SELECT {entry_values} FROM batch
        ), received AS (
            INSERT INTO "{schema}".raw_events (event_id, org_id, body)
            SELECT r->>{event_id}, r->>{org_id}, body FROM batch
        ), recorded AS (
            INSERT INTO "{schema}".recorded_sequences (org_id, sequence)
            SELECT r->>{org_id}, (r->>{sequence})::bigint FROM batch
        ), moved AS (
            {moved_positions_sql(schema, positions, positions + 1)}
        )
        INSERT INTO "{schema}".chains ({", ".join(CHAIN_COLUMNS)})
        SELECT * FROM unnest({chain_arrays})
        ON CONFLICT (org_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in CHAIN_COLUMNS[1:])}"""
