"""The event store's recorders, with what membership keeps beside the events.

`insert_events(..., command_records=[...], invitation_orgs=[...])` writes, in the transaction that
inserts the events, the command records (so a success is remembered exactly when its events are
saved) and which organization each new invitation belongs to (an invitation link names only the
invitation).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from .idempotency import CommandFingerprint, CommandRecord


class CommandRecorder(Protocol):
    """An application recorder that also keeps command records."""

    def find_command(self, command_id: str, recorded_since: datetime) -> CommandRecord | None: ...

    def remember_command(self, record: CommandRecord) -> None:
        """For a reply without events; a record already there wins."""

    def forget_commands_before(self, cutoff: datetime) -> int: ...

    def org_of_invitation(self, invitation_id: str) -> str | None: ...

    def command_and_events_after(
        self, command_id: str, recorded_since: datetime, originator_id: UUID, after_version: int
    ) -> tuple[CommandRecord | None, Sequence[StoredEvent]]:
        """`find_command` and the aggregate's events after a version, read together (one round trip on PostgreSQL)."""


class PostgresCommandRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records_table = f"{self.events_table_name.removesuffix('_events')}_command_records"
        table = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.records_table))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "org_id text NOT NULL, command_id text NOT NULL, command_name text NOT NULL, "
                "actor_type text NOT NULL, actor_id text NOT NULL, body_hash text NOT NULL, "
                "reply bytea NOT NULL, sealed boolean NOT NULL, recorded_at timestamptz NOT NULL, "
                "PRIMARY KEY (command_id))"
            ).format(table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (recorded_at)").format(
                Identifier(f"{self.records_table}_recorded_at"), table
            )
        )
        self._insert_record = SQL(
            "INSERT INTO {0} (org_id, command_id, command_name, actor_type, actor_id, body_hash, reply, sealed, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(table)
        self._select_record = SQL(
            "SELECT org_id, command_name, actor_type, actor_id, body_hash, reply, sealed, recorded_at FROM {0} "
            "WHERE command_id = %s AND recorded_at >= %s"
        ).format(table)
        events = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        self._select_record_and_events = SQL(
            "SELECT r.org_id, r.command_name, r.actor_type, r.actor_id, r.body_hash, r.reply, r.sealed, r.recorded_at, "
            "e.originator_version, e.topic, e.state FROM (SELECT 1) one "
            "LEFT JOIN LATERAL (SELECT * FROM {0} WHERE command_id = %s AND recorded_at >= %s) r ON true "
            "LEFT JOIN LATERAL (SELECT originator_version, topic, state FROM {1} "
            "WHERE originator_id = %s AND originator_version > %s) e ON true "
            "ORDER BY e.originator_version"
        ).format(table, events)
        self._delete_before = SQL("DELETE FROM {0} WHERE recorded_at < %s").format(table)
        self._delete_stale = SQL("DELETE FROM {0} WHERE command_id = %s AND recorded_at < %s").format(table)
        self._add_invitation_index()

    def _add_invitation_index(self) -> None:
        self.invitations_table = f"{self.events_table_name.removesuffix('_events')}_invitation_orgs"
        index = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.invitations_table))
        events = SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {0} (invitation_id text PRIMARY KEY, org_id text NOT NULL)").format(index)
        )
        # Invitations recorded before the index existed: read once from the stored events (JSON), when it is empty.
        self.sql_create_statements.append(
            SQL(
                "INSERT INTO {0} (invitation_id, org_id) "
                "SELECT e.state->>'invitation_id', e.state->>'org_id' FROM "
                "(SELECT convert_from(state, 'UTF8')::jsonb AS state FROM {1} WHERE topic LIKE '%%:MemberInvited') e "
                "WHERE NOT EXISTS (SELECT 1 FROM {0}) ON CONFLICT DO NOTHING"
            ).format(index, events)
        )
        self._insert_invitation = SQL("INSERT INTO {0} (invitation_id, org_id) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
            index
        )
        self._select_invitation = SQL("SELECT org_id FROM {0} WHERE invitation_id = %s").format(index)

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        records: Sequence[CommandRecord] = kwargs.get("command_records", ())
        if records:
            curs.executemany(self._delete_stale, [(r.command_id, r.stale_before) for r in records])
            curs.executemany(self._insert_record, [_row(record) for record in records])
        invitation_orgs: Sequence[tuple[str, str]] = kwargs.get("invitation_orgs", ())
        if invitation_orgs:
            curs.executemany(self._insert_invitation, invitation_orgs)
        super()._insert_events(curs, stored_events, **kwargs)

    def org_of_invitation(self, invitation_id: str) -> str | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_invitation, (invitation_id,), prepare=True)
            row = curs.fetchone()
        return None if row is None else str(row["org_id"])

    def find_command(self, command_id: str, recorded_since: datetime) -> CommandRecord | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_record, (command_id, recorded_since), prepare=True)
            row = curs.fetchone()
        return _record_of(command_id, row)

    def command_and_events_after(
        self, command_id: str, recorded_since: datetime, originator_id: UUID, after_version: int
    ) -> tuple[CommandRecord | None, Sequence[StoredEvent]]:
        """One statement, one round trip: the record (repeated on each row) beside each newer event, or alone."""
        record: CommandRecord | None = None
        stored: list[StoredEvent] = []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_record_and_events, (command_id, recorded_since, originator_id, after_version), prepare=True)
            for row in curs.fetchall():
                if record is None and row["command_name"] is not None:
                    record = _record_of(command_id, row)
                if row["originator_version"] is not None:
                    stored.append(
                        StoredEvent(
                            originator_id=originator_id,
                            originator_version=row["originator_version"],
                            topic=row["topic"],
                            state=bytes(row["state"]),
                        )
                    )
        return record, stored

    def remember_command(self, record: CommandRecord) -> None:
        statement = self._insert_record + SQL(" ON CONFLICT (command_id) DO NOTHING")
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._delete_stale, (record.command_id, record.stale_before))
            curs.execute(statement, _row(record))

    def forget_commands_before(self, cutoff: datetime) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._delete_before, (cutoff,))
            return curs.rowcount


class POPOCommandRecorder(POPOApplicationRecorder):
    """In memory, for unit tests of the domain."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, CommandRecord] = {}
        self._invitation_orgs: dict[str, str] = {}
        self._records_lock = threading.Lock()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        records: Sequence[CommandRecord] = kwargs.get("command_records", ())
        with self._records_lock:
            if any(self._is_fresh(r) for r in records):
                raise IntegrityError("command already recorded")
            notification_ids = super().insert_events(stored_events, **kwargs)
            for record in records:
                self._records[record.command_id] = record
            self._invitation_orgs.update(kwargs.get("invitation_orgs", ()))
        return notification_ids

    def org_of_invitation(self, invitation_id: str) -> str | None:
        return self._invitation_orgs.get(invitation_id)

    def _is_fresh(self, new: CommandRecord) -> bool:
        """An earlier record of the same command that is still inside the window."""
        earlier = self._records.get(new.command_id)
        return earlier is not None and earlier.recorded_at >= new.stale_before

    def find_command(self, command_id: str, recorded_since: datetime) -> CommandRecord | None:
        record = self._records.get(command_id)
        return record if record is not None and record.recorded_at >= recorded_since else None

    def command_and_events_after(
        self, command_id: str, recorded_since: datetime, originator_id: UUID, after_version: int
    ) -> tuple[CommandRecord | None, Sequence[StoredEvent]]:
        return self.find_command(command_id, recorded_since), self.select_events(originator_id, gt=after_version)

    def remember_command(self, record: CommandRecord) -> None:
        with self._records_lock:
            if not self._is_fresh(record):
                self._records[record.command_id] = record

    def forget_commands_before(self, cutoff: datetime) -> int:
        with self._records_lock:
            old = [key for key, record in self._records.items() if record.recorded_at < cutoff]
            for key in old:
                del self._records[key]
        return len(old)


def _record_of(command_id: str, row: DictRow | None) -> CommandRecord | None:
    if row is None:
        return None
    fingerprint = CommandFingerprint(row["command_name"], row["actor_type"], row["actor_id"], row["body_hash"])
    return CommandRecord(
        row["org_id"], command_id, fingerprint, bytes(row["reply"]), row["sealed"], row["recorded_at"], row["recorded_at"]
    )


def _row(record: CommandRecord) -> tuple[Any, ...]:
    f = record.fingerprint
    return (
        record.org_id,
        record.command_id,
        f.command_name,
        f.actor_type,
        f.actor_id,
        f.body_hash,
        record.reply,
        record.sealed,
        record.recorded_at,
    )
