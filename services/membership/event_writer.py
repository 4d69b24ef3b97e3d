"""The group commit's save, on the event loop, through asyncpg.

It writes what the library's recorder writes (`recorders.PostgresCommandRecorder.insert_events`), into
the same tables, under the same table lock, with the same NOTIFY, so the library reads it back as
its own: the events, the command records of the decisions, and the organization of each new
invitation, in one transaction: one call of a PL/pgSQL function (defined on connecting), so one round
trip. What it saves away from the library is the thread hop, psycopg's rendering of every row in
Python and two round trips (`docs/decisions.md`, "The save on the loop").

The store refuses a batch (`IntegrityError`, as the library's recorder raises it) when an event's
version is taken (another instance saved first) or a command's record is still inside its window
(a repeat); a record past the window is replaced, as the library's path deletes and inserts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Composed, Identifier

from .application import Batch, Decision, MembershipApplication, Saved
from .domain.organization import Organization
from .idempotency import CommandRecord
from .recorders import PostgresCommandRecorder

# A connection lost mid-save is opened again and the whole transaction tried again: if the lost one
# had committed, the retry is refused (the versions are taken) and the runner finds the record.
# After PostgreSQL restarts, every idle connection of the pool is stale: one attempt each, then a new one.
CONNECTIONS = 2
ATTEMPTS = CONNECTIONS + 2
REFUSALS = (asyncpg.UniqueViolationError, asyncpg.CardinalityViolationError)
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    ConnectionError,
    OSError,
    asyncpg.LockNotAvailableError,
)

SAVE_FUNCTION_DDL_LOCK = 0x7EA3_0002  # beside the relay's advisory lock key (0x7EA3_0001)

log = structlog.get_logger()


class EventWriter:
    """Saves decisions: the organizations' events, the command records and the invitation index."""

    def __init__(self, app: MembershipApplication, database_url: str) -> None:
        recorder = app.recorder
        if not isinstance(recorder, PostgresCommandRecorder):
            raise TypeError("the event writer writes the PostgreSQL recorder's tables")
        self._app = app
        snapshots = app.snapshots.recorder if app.snapshots is not None else None
        self.inserter = EventInserter(
            recorder,
            database_url,
            app.command_retention,
            snapshots_table=snapshots.events_table_name if isinstance(snapshots, PostgresAggregateRecorder) else None,
        )

    async def save(self, decisions: Sequence[Decision]) -> list[Saved]:
        """Saves the decisions' events and records in one transaction; then their organizations are the cached ones."""
        batch = Batch.of(decisions)
        notification_ids = await self.inserter.insert_events(
            [self._app.mapper.to_stored_event(event) for event in batch.events],
            command_records=batch.records,
            invitation_orgs=batch.invitation_orgs,
        )
        saved = list(zip(notification_ids, batch.events, strict=True))
        self._app.adopt_saved(decisions, saved)
        return saved

    async def save_snapshot(self, decision: Decision) -> None:
        """The saved organization's snapshot, when the decision crossed an interval (as `snapshot_if_due`)."""
        if self._app.snapshots is None or decision.org is None or not self._app.snapshot_due(decision):
            return
        snapshot = Organization.Snapshot.take(decision.org)
        await self.inserter.insert_snapshot(self._app.snapshots.mapper.to_stored_event(snapshot))

    async def close(self) -> None:
        await self.inserter.close()


class EventInserter:
    """`PostgresCommandRecorder.insert_events`, asynchronous, on connections of its own (`connections` at most:
    the group commit keeps two saves in flight; the table lock orders them).

    Its statements are checked by the library's own recorder tests (`tests/integration/test_event_inserter.py`)."""

    def __init__(
        self,
        recorder: PostgresCommandRecorder,
        database_url: str,
        command_retention: timedelta,
        snapshots_table: str | None = None,
        connections: int = CONNECTIONS,
    ) -> None:
        """`snapshots_table` is the library's snapshot store (an aggregate recorder's table), when there is one."""
        self._database_url = database_url
        self._insert_snapshot = (
            None
            if snapshots_table is None
            else SQL("INSERT INTO {0}.{1} (originator_id, originator_version, topic, state) VALUES ($1, $2, $3, $4)")
            .format(Identifier(recorder.datastore.schema), Identifier(snapshots_table))
            .as_string(None)
        )
        self._idle: list[asyncpg.Connection] = []
        self._open: set[asyncpg.Connection] = set()
        self._slots = asyncio.Semaphore(connections)
        self._definition, self._call = _statements(recorder, command_retention)

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        command_records: Sequence[CommandRecord] = (),
        invitation_orgs: Sequence[tuple[str, str]] = (),
    ) -> list[int]:
        """The notification ids of the events, in their order; IntegrityError when the store refuses them."""
        arguments = _arguments(stored_events, command_records, invitation_orgs)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._connection() as connection:
                    # One round trip: the function runs in the statement's own transaction, committed when it returns.
                    return list(await connection.fetchval(self._call, *arguments) or ())
            except LOST:
                if attempt == ATTEMPTS:
                    raise
                log.warning("event store connection lost during a save; trying again", attempt=attempt)
        raise AssertionError("unreachable")

    async def insert_snapshot(self, stored: StoredEvent) -> None:
        """As the library's snapshot recorder inserts one; IntegrityError when that version has one already."""
        if self._insert_snapshot is None:
            raise RuntimeError("no snapshot store")
        async with self._connection() as connection:
            await connection.execute(
                self._insert_snapshot, stored.originator_id, stored.originator_version, stored.topic, stored.state
            )

    async def close(self) -> None:
        for connection in list(self._open):
            _drop(connection)
        self._open.clear()
        self._idle.clear()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """An idle connection or a new one; back to idle after a statement that ended (refused or not), dropped
        after one cut off or lost (its state is unknown). A refusal is raised as the library's IntegrityError."""
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                yield connection
            except REFUSALS as refused:
                self._idle.append(connection)
                raise IntegrityError(str(refused)) from refused
            except BaseException:
                self._open.discard(connection)
                _drop(connection)
                raise
            self._idle.append(connection)

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self._database_url)
        try:
            await connection.execute(self._definition)
        except BaseException:
            _drop(connection)
            raise
        self._open.add(connection)
        return connection


def _drop(connection: asyncpg.Connection) -> None:
    if not connection.is_closed():
        connection.terminate()


def _arguments(
    stored: Sequence[StoredEvent], records: Sequence[CommandRecord], invitations: Sequence[tuple[str, str]]
) -> tuple[list[Any], ...]:
    return (
        [r.org_id for r in records],
        [r.command_id for r in records],
        [r.fingerprint.command_name for r in records],
        [r.fingerprint.actor_type for r in records],
        [r.fingerprint.actor_id for r in records],
        [r.fingerprint.body_hash for r in records],
        [r.reply for r in records],
        [r.sealed for r in records],
        [r.recorded_at for r in records],
        [invitation_id for invitation_id, _ in invitations],
        [org_id for _, org_id in invitations],
        [s.originator_id for s in stored],
        [s.originator_version for s in stored],
        [s.topic for s in stored],
        [s.state for s in stored],
    )


def _statements(recorder: PostgresCommandRecorder, retention: timedelta) -> tuple[str, str]:
    """The save function's definition (made on connecting), and the one statement that calls it."""
    datastore = recorder.datastore
    schema = Identifier(datastore.schema)

    def table(name: str) -> Composed:
        return SQL("{0}.{1}").format(schema, Identifier(name))

    function = table(f"{recorder.events_table_name.removesuffix('_events')}_save_decisions")
    definition = SQL(
        "BEGIN; SELECT pg_advisory_xact_lock({ddl_lock});"  # instances starting together: one definition at a time
        " CREATE OR REPLACE FUNCTION {function}("
        " record_orgs text[], record_ids text[], record_names text[], actor_types text[], actor_ids text[],"
        " body_hashes text[], replies bytea[], sealed boolean[], recorded_at timestamptz[],"
        " invitation_ids text[], invitation_orgs text[],"
        " originator_ids {id_type}[], originator_versions bigint[], topics text[], states bytea[],"
        " retention_seconds double precision) RETURNS bigint[] LANGUAGE plpgsql AS $save$"
        " DECLARE kept bigint; notification_ids bigint[];"
        " BEGIN"
        "  PERFORM set_config('lock_timeout', '{lock_timeout}s', true);"
        "  LOCK TABLE {events} IN EXCLUSIVE MODE;"
        "  NOTIFY {channel};"
        "  WITH recorded AS ("
        "   INSERT INTO {records} AS r (org_id, command_id, command_name, actor_type, actor_id, body_hash, reply, sealed,"
        "   recorded_at)"
        "   SELECT * FROM unnest(record_orgs, record_ids, record_names, actor_types, actor_ids, body_hashes, replies, sealed,"
        "   recorded_at)"
        "   ON CONFLICT (command_id) DO UPDATE SET org_id = EXCLUDED.org_id, command_name = EXCLUDED.command_name,"
        "   actor_type = EXCLUDED.actor_type, actor_id = EXCLUDED.actor_id, body_hash = EXCLUDED.body_hash,"
        "   reply = EXCLUDED.reply, sealed = EXCLUDED.sealed, recorded_at = EXCLUDED.recorded_at"
        "   WHERE r.recorded_at < EXCLUDED.recorded_at - make_interval(secs => retention_seconds)"
        "   RETURNING 1)"
        "  SELECT count(*) INTO kept FROM recorded;"
        "  IF kept <> cardinality(record_ids) THEN"
        "   RAISE EXCEPTION 'a record of one of these commands is still inside its window' USING ERRCODE = 'unique_violation';"
        "  END IF;"
        "  INSERT INTO {invitations} (invitation_id, org_id) SELECT * FROM unnest(invitation_ids, invitation_orgs)"
        "  ON CONFLICT DO NOTHING;"
        "  WITH stored AS ("
        "   INSERT INTO {events} (originator_id, originator_version, topic, state)"
        "   SELECT * FROM unnest(originator_ids, originator_versions, topics, states) RETURNING notification_id)"
        "  SELECT array_agg(notification_id ORDER BY notification_id) INTO notification_ids FROM stored;"
        "  RETURN notification_ids;"
        " END $save$; COMMIT"
    ).format(
        ddl_lock=SQL(str(SAVE_FUNCTION_DDL_LOCK)),
        function=function,
        id_type=Identifier(datastore.originator_id_type),
        lock_timeout=SQL(str(int(datastore.lock_timeout))),
        events=table(recorder.events_table_name),
        channel=Identifier(recorder.channel_name),
        records=table(recorder.records_table),
        invitations=table(recorder.invitations_table),
    )
    call = SQL(
        "SELECT {function}($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],"
        " $8::boolean[], $9::timestamptz[], $10::text[], $11::text[], $12::{id_type}[], $13::bigint[], $14::text[],"
        " $15::bytea[], {retention}::double precision)"
    ).format(function=function, id_type=Identifier(datastore.originator_id_type), retention=SQL(repr(retention.total_seconds())))
    return definition.as_string(None), call.as_string(None)
