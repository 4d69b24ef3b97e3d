"""Every SQL statement on `deliveries`, in one place (the table itself is created in `projection.py`).

Each method takes the connection of the caller's transaction: the projection records and skips
inside the consumer's batch, the sender claims and settles in its own short transactions, the
rebuild carries the sending state over inside the swap. The statuses are `deliveries.Status`.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared import live_schema

from .deliveries import Kind, Status

# Held shared by every send in progress (claim -> SMTP -> mark), exclusively by a rebuild's swap.
SENDING_LOCK = zlib.crc32(b"notifier.sending")

_PENDING, _SENDING, _SENT, _FAILED, _SKIPPED = (f"'{status.value}'" for status in Status)  # as SQL literals
DEAD_LETTER_BATCH = 100


@dataclass(frozen=True)
class NewDelivery:
    """One email to send, recorded from a `MemberInvited` or `InvitationResent`."""

    event_id: str
    org_id: str
    invitation_id: str
    kind: Kind
    recipient: str
    org_name: str
    inviter: str
    expires_at: datetime
    occurred_at: datetime
    sequence: int


@dataclass(frozen=True)
class Invited:
    """One `MemberInvited`, as the projection records it: the invitation, and its email to send. The
    inviter is named at write time from what is stored (a person's email, a key's name); `unnamed`
    is how the email names them when nothing is."""

    event_id: str
    org_id: str
    invitation_id: str
    recipient: str
    expires_at: datetime
    occurred_at: datetime
    sequence: int
    inviter_type: str
    inviter_id: str
    unnamed: str

    def row(self) -> tuple[object, ...]:
        return tuple(getattr(self, column) for column in INVITED_COLUMNS)


INVITED_COLUMNS = tuple(Invited.__dataclass_fields__)
KEY_INVITER = "API key "  # an inviting key is named `API key <its name>`


@dataclass(frozen=True)
class InvitationNow:
    """A claimed delivery's invitation as the projection knows it now (what `why_not_send` reads)."""

    status: str | None
    current_event_id: str | None


@dataclass(frozen=True)
class Settled:
    """What one settlement found: whether the row was still this claim's (`held`), and the batch's
    following row's invitation now, or None when that row is no longer this claim's (or none was asked)."""

    held: bool
    following: InvitationNow | None


def _count(status: str) -> int:
    """The row count of an asyncpg command status (`UPDATE 3`)."""
    return int(status.split()[-1])


class DeliveryStore:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._table = f'"{schema}".deliveries'

    # the projection's side

    async def add(self, connection: asyncpg.Connection, delivery: NewDelivery) -> int:
        """A `pending` row, due at once; a second time for the same event adds nothing. Returns 1 or 0."""
        status = await connection.execute(
            f"""INSERT INTO {self._table}
                    (event_id, org_id, invitation_id, kind, recipient, org_name, inviter, expires_at, occurred_at,
                     status, next_attempt_at, sequence)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {_PENDING}, $9, $10)
                ON CONFLICT (event_id) DO NOTHING""",
            delivery.event_id,
            delivery.org_id,
            delivery.invitation_id,
            delivery.kind,
            delivery.recipient,
            delivery.org_name,
            delivery.inviter,
            delivery.expires_at,
            delivery.occurred_at,
            delivery.sequence,
        )
        return _count(status)

    async def add_invited(self, connection: asyncpg.Connection, run: list[Invited]) -> int:
        """A run of `MemberInvited` in one statement: each invitation (the first event of an invitation
        stands) and each event's `pending` delivery, named as `add` would name it one by one: the
        organization's stored name (else its id), the inviting person's stored email or key's stored
        name (else `unnamed`). Only events that change nothing the run reads may come between
        them. A second time for the same event adds nothing. Returns the deliveries added."""
        status = await connection.execute(
            f"""WITH run AS (
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                         $6::timestamptz[], $7::bigint[], $8::text[], $9::text[], $10::text[])
                        WITH ORDINALITY AS e({", ".join(INVITED_COLUMNS)}, n)),
                invitations AS (
                    INSERT INTO "{self.schema}".invitations
                        (invitation_id, org_id, email, status, expires_at, current_event_id)
                    SELECT invitation_id, org_id, recipient, 'pending', expires_at, event_id FROM run ORDER BY n
                    ON CONFLICT (invitation_id) DO NOTHING)
                INSERT INTO {self._table}
                    (event_id, org_id, invitation_id, kind, recipient, org_name, inviter, expires_at, occurred_at,
                     status, next_attempt_at, sequence)
                SELECT e.event_id, e.org_id, e.invitation_id, 'invited', e.recipient, coalesce(nullif(o.name, ''), e.org_id),
                       coalesce(nullif(p.email, ''), $11 || nullif(k.name, ''), e.unnamed), e.expires_at, e.occurred_at,
                       {_PENDING}, e.occurred_at, e.sequence
                FROM run AS e
                LEFT JOIN "{self.schema}".organizations AS o ON o.org_id = e.org_id
                LEFT JOIN "{self.schema}".people AS p
                    ON e.inviter_type = 'user' AND p.org_id = e.org_id AND p.user_id = e.inviter_id
                LEFT JOIN "{self.schema}".api_keys AS k
                    ON e.inviter_type = 'api_key' AND k.org_id = e.org_id AND k.key_id = e.inviter_id
                ORDER BY e.n
                ON CONFLICT (event_id) DO NOTHING""",
            *(list(column) for column in zip(*(invited.row() for invited in run), strict=True)),
            KEY_INVITER,
        )
        return _count(status)

    async def skip_pending(self, connection: asyncpg.Connection, invitation_id: str, reason: str) -> None:
        """Pending deliveries are not sent any more; one being sent right now finishes."""
        await connection.execute(
            f"""UPDATE {self._table} SET status = {_SKIPPED}, reason = $2
                WHERE invitation_id = $1 AND status = {_PENDING}""",
            invitation_id,
            reason,
        )

    async def carry_over(self, connection: asyncpg.Connection, live_schema: str) -> int:
        """Before a rebuild's swap: these (the shadow's) deliveries take the live ones' sending state,
        so a rebuild never sends again what was sent, failed or skipped. A live `pending` row the
        shadow already skipped (its revocation replayed, not yet applied live) stays skipped."""
        status = await connection.execute(
            f"""UPDATE {self._table} AS s
                SET status = l.status, reason = l.reason, attempts = l.attempts,
                    next_attempt_at = l.next_attempt_at, claimed_at = l.claimed_at, last_error = l.last_error,
                    sent_at = l.sent_at, dead_lettered = l.dead_lettered
                FROM "{live_schema}".deliveries AS l
                WHERE s.event_id = l.event_id AND NOT (l.status = {_PENDING} AND s.status = {_SKIPPED})"""
        )
        return _count(status)

    # the sender's side

    @asynccontextmanager
    async def sending(self, connection: asyncpg.Connection) -> AsyncIterator[None]:
        """Held around one send, from claim to settlement; a rebuild's swap waits for it."""
        await connection.execute("SELECT pg_advisory_lock_shared($1)", SENDING_LOCK)
        try:
            yield
        finally:
            await connection.execute("SELECT pg_advisory_unlock_shared($1)", SENDING_LOCK)

    @staticmethod
    async def hold_back_sending(connection: asyncpg.Connection) -> None:
        """For the rest of this transaction: every send in progress has settled, and none starts."""
        await connection.execute("SELECT pg_advisory_xact_lock($1)", SENDING_LOCK)

    async def claim(
        self, connection: asyncpg.Connection, now: datetime, stale_before: datetime, limit: int
    ) -> list[asyncpg.Record]:
        """Up to `limit` of the oldest due deliveries, oldest first (`pending` and due, or `sending` since
        before `stale_before`), marked `sending` with one more attempt (`attempts` is this one) and
        `claimed_at` = `now`, with their invitations' state as the claim found it. One autocommit
        statement (`SKIP LOCKED`: several senders never take the same one); a row the sender then
        finds it must not send is given back with `skip_claimed`."""
        rows: list[asyncpg.Record] = await connection.fetch(
            f"""WITH due AS (
                    SELECT event_id FROM {self._table}
                    WHERE (status = {_PENDING} AND next_attempt_at <= $1) OR (status = {_SENDING} AND claimed_at <= $2)
                    ORDER BY occurred_at, event_id
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED),
                claimed AS (
                    UPDATE {self._table} AS d SET status = {_SENDING}, attempts = d.attempts + 1, claimed_at = $1
                    FROM due WHERE d.event_id = due.event_id
                    RETURNING d.*)
                SELECT c.*, i.status AS invitation_status, i.current_event_id
                FROM claimed AS c
                LEFT JOIN "{self.schema}".invitations AS i ON i.invitation_id = c.invitation_id
                ORDER BY c.occurred_at, c.event_id""",
            now,
            stale_before,
            limit,
        )
        return rows

    # Settling a claimed row: only while it is still this claim's (`status = 'sending'` and the claim's
    # `claimed_at`). A sender past its deadline may find that another took the row over (its
    # `claimed_at` is later): it leaves it alone, so it never puts back or settles someone else's send.

    async def release(self, connection: asyncpg.Connection, event_ids: list[str], claimed_at: datetime) -> None:
        """Claimed rows not tried after all: `pending` again as they were, due at once."""
        await connection.execute(
            f"""UPDATE {self._table} SET status = {_PENDING}, attempts = attempts - 1, claimed_at = NULL
                WHERE event_id = ANY($1) AND status = {_SENDING} AND claimed_at = $2""",
            event_ids,
            claimed_at,
        )

    async def mark_sent(
        self, connection: asyncpg.Connection, event_id: str, claimed_at: datetime, now: datetime, following: str | None
    ) -> Settled:
        return await self._settle(
            connection, f"status = {_SENT}, sent_at = $4, last_error = NULL", event_id, claimed_at, following, now
        )

    async def mark_failed(
        self, connection: asyncpg.Connection, event_id: str, claimed_at: datetime, error: str, following: str | None
    ) -> Settled:
        """Refused for good: waits to be dead-lettered."""
        return await self._settle(
            connection, f"status = {_FAILED}, last_error = $4, dead_lettered = false", event_id, claimed_at, following, error
        )

    async def skip_claimed(
        self, connection: asyncpg.Connection, event_id: str, claimed_at: datetime, reason: str, following: str | None
    ) -> Settled:
        """Claimed, then found not to be sent after all: `skipped`, its attempt given back (never tried)."""
        return await self._settle(
            connection,
            f"status = {_SKIPPED}, reason = $4, attempts = attempts - 1, claimed_at = NULL",
            event_id,
            claimed_at,
            following,
            reason,
        )

    async def retry_later(
        self, connection: asyncpg.Connection, event_id: str, claimed_at: datetime, error: str, at: datetime
    ) -> bool:
        """`pending` again after a temporary failure, due `at`; False when the row was no longer this claim's."""
        status = await connection.execute(
            f"""UPDATE {self._table} SET status = {_PENDING}, last_error = $3, next_attempt_at = $4
                WHERE event_id = $1 AND status = {_SENDING} AND claimed_at = $2""",
            event_id,
            claimed_at,
            error,
            at,
        )
        return _count(status) > 0

    async def _settle(
        self,
        connection: asyncpg.Connection,
        assignments: str,
        event_id: str,
        claimed_at: datetime,
        following: str | None,
        value: object,
    ) -> Settled:
        """Settles a claimed row (`assignments`, with `value` as $4) and, in the same statement, reads
        the batch's `following` row as it is now (the sender checks it before it sends: no round trip
        of its own). The data-modifying CTE runs whether or not its rows are read."""
        row = await connection.fetchrow(
            f"""WITH settled AS (
                    UPDATE {self._table} SET {assignments}
                    WHERE event_id = $1 AND status = {_SENDING} AND claimed_at = $2
                    RETURNING event_id)
                SELECT EXISTS (SELECT FROM settled) AS held, n.event_id IS NOT NULL AS following_held,
                       i.status AS invitation_status, i.current_event_id
                FROM (SELECT) AS one
                LEFT JOIN {self._table} AS n ON n.event_id = $3 AND n.status = {_SENDING} AND n.claimed_at = $2
                LEFT JOIN "{self.schema}".invitations AS i ON i.invitation_id = n.invitation_id""",
            event_id,
            claimed_at,
            following,
            value,
        )
        assert row is not None
        if not row["following_held"]:
            return Settled(held=row["held"], following=None)
        return Settled(
            held=row["held"],
            following=InvitationNow(status=row["invitation_status"], current_event_id=row["current_event_id"]),
        )

    async def not_yet_dead_lettered(self, connection: asyncpg.Connection) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await connection.fetch(
            f"""SELECT event_id, org_id, invitation_id, kind, recipient, attempts, last_error
                FROM {self._table} WHERE status = {_FAILED} AND NOT dead_lettered
                ORDER BY event_id LIMIT {DEAD_LETTER_BATCH}"""
        )
        return rows

    # An operator's retry and the dead-letter mark change the live log outside the projection's batches:
    # under the live schema's lock, so a rebuild's swap on another instance waits for them, not drops them.

    async def mark_dead_lettered(self, connection: asyncpg.Connection, event_id: str) -> None:
        async with live_schema.writing(connection, self.schema):
            await connection.execute(f"UPDATE {self._table} SET dead_lettered = true WHERE event_id = $1", event_id)

    async def retry_failed(self, connection: asyncpg.Connection, event_id: str, now: datetime) -> bool:
        """A failed delivery back to `pending`, due `now`; False when it is not failed."""
        async with live_schema.writing(connection, self.schema):
            status = await connection.execute(
                f"""UPDATE {self._table} SET status = {_PENDING}, next_attempt_at = $2, dead_lettered = false
                    WHERE event_id = $1 AND status = {_FAILED}""",
                event_id,
                now,
            )
        return _count(status) > 0

    # the reader's side

    async def page(self, connection: asyncpg.Connection, org_id: str, after_sequence: int, limit: int) -> list[asyncpg.Record]:
        """An organization's deliveries after `after_sequence`, by sequence, as the delivery log shows them."""
        rows: list[asyncpg.Record] = await connection.fetch(
            f"""SELECT sequence, event_id, recipient AS "to", status, attempts, invitation_id, kind, reason,
                       last_error, sent_at, next_attempt_at, occurred_at
                FROM {self._table} WHERE org_id = $1 AND sequence > $2
                ORDER BY sequence LIMIT $3""",
            org_id,
            after_sequence,
            limit,
        )
        return rows

    async def counts(self, connection: asyncpg.Connection) -> dict[str, int]:
        """How many deliveries are in each status."""
        rows = await connection.fetch(f"SELECT status, count(*) AS n FROM {self._table} GROUP BY status")
        return {row["status"]: row["n"] for row in rows}
