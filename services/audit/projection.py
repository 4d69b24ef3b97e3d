"""The audit log in PostgreSQL: append-only entries, one hash chain per organization, raw events.

The database itself refuses UPDATE and DELETE on entries, unless the transaction says it is the
retention purge (`SET LOCAL audit.purge = 'on'`, which only `retention.py` does).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec

from shared.contract.events import Envelope
from shared.migrations import migrate

from .entries import GENESIS_HASH, entry_for

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
CHAIN_COLUMNS = ("org_id", "plan", "last_seq", "last_hash", "latest_occurred_at", "in_time_order")

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
        CREATE INDEX entries_by_time ON {schema}.entries (org_id, occurred_at);
        CREATE INDEX entries_by_action ON {schema}.entries (org_id, action, seq);
        CREATE INDEX entries_by_actor ON {schema}.entries (org_id, (actor->>'id'), seq);
        CREATE INDEX entries_by_target ON {schema}.entries USING gin (targets jsonb_path_ops);
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
]


class AuditProjection:
    def __init__(self, schema: str = LIVE_SCHEMA) -> None:
        self.schema = schema

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await migrate(connection, self.schema, MIGRATIONS)

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        chains = await self._chains(connection, {event.org_id for event in events})
        entries, raw, recorded = [], [], []
        for event in events:
            chain = chains.setdefault(event.org_id, new_chain())
            if event.event_type in ("OrganizationCreated", "PlanChanged"):
                chain["plan"] = event.data.get("plan") or event.data.get("to_plan") or chain["plan"]
            entry = entry_for(event, chain["last_seq"] + 1, chain["last_hash"])
            chain["last_seq"], chain["last_hash"] = entry["seq"], entry["hash"]
            latest = chain["latest_occurred_at"]
            if latest is not None and event.occurred_at < latest:
                chain["in_time_order"] = False
            chain["latest_occurred_at"] = event.occurred_at if latest is None else max(latest, event.occurred_at)
            entries.append(_row(entry, event))
            raw.append((event.event_id, event.org_id, msgspec.json.encode(event).decode()))
            recorded.append((event.org_id, event.sequence))
        if not entries:
            return
        await connection.copy_records_to_table("entries", schema_name=self.schema, columns=ENTRY_COLUMNS, records=entries)
        await connection.copy_records_to_table("raw_events", schema_name=self.schema, records=raw)
        await connection.copy_records_to_table("recorded_sequences", schema_name=self.schema, records=recorded)
        await connection.executemany(
            f"""INSERT INTO "{self.schema}".chains ({", ".join(CHAIN_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (org_id) DO UPDATE
                SET plan = $2, last_seq = $3, last_hash = $4, latest_occurred_at = $5, in_time_order = $6""",
            [(org_id, *(c[column] for column in CHAIN_COLUMNS[1:])) for org_id, c in chains.items()],
        )

    async def _chains(self, connection: asyncpg.Connection, org_ids: set[str]) -> dict[str, dict[str, Any]]:
        rows = await connection.fetch(
            f'SELECT {", ".join(CHAIN_COLUMNS)} FROM "{self.schema}".chains WHERE org_id = ANY($1) FOR UPDATE',
            list(org_ids),
        )
        return {row["org_id"]: dict(row) for row in rows}


def new_chain() -> dict[str, Any]:
    return {"plan": "free", "last_seq": 0, "last_hash": GENESIS_HASH, "latest_occurred_at": None, "in_time_order": True}


def _row(entry: dict[str, Any], event: Envelope) -> tuple:
    values = {**entry, "occurred_at": event.occurred_at}
    for column in JSON_COLUMNS:
        values[column] = json.dumps(entry[column], ensure_ascii=False)
    return tuple(values[column] for column in ENTRY_COLUMNS)
