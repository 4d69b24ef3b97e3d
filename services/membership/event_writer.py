"""The group commit's save, on the event loop, through asyncpg.

It writes what the library's recorder writes (`recorders.PostgresCommandRecorder.insert_events`), into
the same tables, under the same table lock, with the same NOTIFY, so the library reads it back as
its own: the events, the command records of the decisions, and the organization of each new
invitation, in one transaction and one statement. What it saves away from the library is the
thread hop and psycopg's rendering of every row in Python (`docs/decisions.md`, "The save on the loop").

The store refuses a batch (`IntegrityError`, as the library's recorder raises it) when an event's
version is taken (another instance saved first) or a command's record is still inside its window
(a repeat); a record past the window is replaced, as the library's path deletes and inserts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.sql import SQL, Composed, Identifier

from .application import Decision, MembershipApplication
from .domain.events import MemberInvited, OrganizationEvent
from .idempotency import CommandRecord
from .recorders import PostgresCommandRecorder

Saved = list[tuple[int, OrganizationEvent]]  # notification id and event, in notification order

# A connection lost mid-save is opened again and the whole transaction tried again: if the lost one
# had committed, the retry is refused (the versions are taken) and the runner finds the record.
ATTEMPTS = 3
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

log = structlog.get_logger()


class EventWriter:
    """Saves decisions: the organizations' events, the command records and the invitation index."""

    def __init__(self, app: MembershipApplication, database_url: str) -> None:
        recorder = app.recorder
        if not isinstance(recorder, PostgresCommandRecorder):
            raise TypeError("the event writer writes the PostgreSQL recorder's tables")
        self._app = app
        self.inserter = EventInserter(recorder, database_url, app.command_retention)

    async def save(self, decisions: Sequence[Decision]) -> Saved:
        """Saves the decisions' events and records in one transaction; then their organizations are the cached ones."""
        events = [event for decision in decisions for event in decision.recorded]
        notification_ids = await self.inserter.insert_events(
            [self._app.mapper.to_stored_event(event) for event in events],
            command_records=[d.record for d in decisions if d.record is not None],
            invitation_orgs=[(e.invitation_id, e.org_id) for e in events if isinstance(e, MemberInvited)],
        )
        saved = list(zip(notification_ids, events, strict=True))
        self._app.adopt_saved(decisions, saved)
        return saved

    async def close(self) -> None:
        await self.inserter.close()


class EventInserter:
    """`PostgresCommandRecorder.insert_events`, asynchronous, on a connection of its own.

    Its statements are checked by the library's own recorder tests (`tests/integration/test_event_inserter.py`)."""

    def __init__(self, recorder: PostgresCommandRecorder, database_url: str, command_retention: timedelta) -> None:
        self._database_url = database_url
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._begin, self._insert = _statements(recorder, command_retention)

    async def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        command_records: Sequence[CommandRecord] = (),
        invitation_orgs: Sequence[tuple[str, str]] = (),
    ) -> list[int]:
        """The notification ids of the events, in their order; IntegrityError when the store refuses them."""
        arguments = _arguments(stored_events, command_records, invitation_orgs)
        async with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return await self._transaction(arguments, len(command_records))
                except LOST:
                    await self._forget_connection()
                    if attempt == ATTEMPTS:
                        raise
                    log.warning("event store connection lost during a save; trying again", attempt=attempt)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._forget_connection()

    async def _transaction(self, arguments: tuple[list[Any], ...], records: int) -> list[int]:
        connection = await self._connected()
        await connection.execute(self._begin)
        try:
            row = await connection.fetchrow(self._insert, *arguments)
        except REFUSALS as refused:
            await connection.execute("ROLLBACK")
            raise IntegrityError(str(refused)) from refused
        except BaseException:
            await self._forget_connection()  # its transaction is aborted, or in an unknown state
            raise
        if row is None or row["records"] != records:
            await connection.execute("ROLLBACK")
            raise IntegrityError("a record of one of these commands is still inside its window")
        await connection.execute("COMMIT")
        return list(row["notification_ids"] or ())

    async def _connected(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._database_url)
        return self._connection

    async def _forget_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
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
    """The transaction's opening (one round trip), and the one statement that writes everything."""
    datastore = recorder.datastore
    schema = Identifier(datastore.schema)

    def table(name: str) -> Composed:
        return SQL("{0}.{1}").format(schema, Identifier(name))

    def rendered(statement: Composed) -> str:
        return statement.as_string(None)

    events = table(recorder.events_table_name)
    begin = SQL("BEGIN; SET LOCAL lock_timeout = '{0}s'; LOCK TABLE {1} IN EXCLUSIVE MODE; NOTIFY {2}").format(
        SQL(str(int(datastore.lock_timeout))), events, Identifier(recorder.channel_name)
    )
    insert = SQL(
        "WITH records AS ("
        " INSERT INTO {records} AS r (org_id, command_id, command_name, actor_type, actor_id, body_hash, reply, sealed, recorded_at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],"
        " $8::boolean[], $9::timestamptz[])"
        " ON CONFLICT (command_id) DO UPDATE SET org_id = EXCLUDED.org_id, command_name = EXCLUDED.command_name,"
        " actor_type = EXCLUDED.actor_type, actor_id = EXCLUDED.actor_id, body_hash = EXCLUDED.body_hash,"
        " reply = EXCLUDED.reply, sealed = EXCLUDED.sealed, recorded_at = EXCLUDED.recorded_at"
        " WHERE r.recorded_at < EXCLUDED.recorded_at - make_interval(secs => {retention})"
        " RETURNING 1"
        "), invitations AS ("
        " INSERT INTO {invitations} (invitation_id, org_id) SELECT * FROM unnest($10::text[], $11::text[])"
        " ON CONFLICT DO NOTHING"
        "), events AS ("
        " INSERT INTO {events} (originator_id, originator_version, topic, state)"
        " SELECT * FROM unnest($12::{id_type}[], $13::bigint[], $14::text[], $15::bytea[])"
        " RETURNING notification_id"
        ") SELECT (SELECT count(*) FROM records) AS records,"
        " (SELECT array_agg(notification_id ORDER BY notification_id) FROM events) AS notification_ids"
    ).format(
        records=table(recorder.records_table),
        invitations=table(recorder.invitations_table),
        events=events,
        id_type=Identifier(datastore.originator_id_type),
        retention=SQL(repr(retention.total_seconds())),
    )
    return rendered(begin), rendered(insert)
