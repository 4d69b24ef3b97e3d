"""The notifier's read model in PostgreSQL: what it needs to write an invitation email, and the
delivery log.

Each `MemberInvited` and `InvitationResent` becomes one delivery row (`store.py`), keyed by its
`event_id`, in status `pending`. The projection never sends: the sender (`sender.py`) takes pending rows after
the projection's transaction has committed. Revocations, acceptances and later resends turn the
invitation's pending deliveries into `skipped`, so nothing is mailed late. Only the event data is
used (never the clock), so a replay builds the same rows; statuses reached by sending are carried
over from the live schema by `DeliveryStore.carry_over` when a rebuild swaps schemas.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.consumer import PositionedBatch, moved_positions_sql, read_positions
from shared.contract import events as ev
from shared.contract.common import Actor
from shared.contract.events import Envelope
from shared.migrations import migrate

from .deliveries import SUPERSEDED, Kind, closed_reason
from .store import KEY_INVITER, DeliveryStore, Invited, NewDelivery

LIVE_SCHEMA = "notifier"
WAKE_CHANNEL = "notifier_deliveries"  # NOTIFY on commit of new deliveries; the sender LISTENs

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE {schema}.organizations (
            org_id text PRIMARY KEY,
            name text NOT NULL
        );
        CREATE TABLE {schema}.people (
            org_id text NOT NULL,
            user_id text NOT NULL,
            email text NOT NULL,
            PRIMARY KEY (org_id, user_id)
        );
        CREATE TABLE {schema}.api_keys (
            org_id text NOT NULL,
            key_id text NOT NULL,
            name text NOT NULL,
            PRIMARY KEY (org_id, key_id)
        );
        CREATE TABLE {schema}.invitations (
            invitation_id text PRIMARY KEY,
            org_id text NOT NULL,
            email text NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'revoked', 'accepted')),
            expires_at timestamptz NOT NULL,
            current_event_id text NOT NULL
        );
        CREATE TABLE {schema}.deliveries (
            event_id text PRIMARY KEY,
            org_id text NOT NULL,
            invitation_id text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('invited', 'resent')),
            recipient text NOT NULL,
            org_name text NOT NULL,
            inviter text NOT NULL,
            expires_at timestamptz NOT NULL,
            occurred_at timestamptz NOT NULL,
            status text NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
            reason text,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL,
            claimed_at timestamptz,
            last_error text,
            sent_at timestamptz,
            dead_lettered boolean NOT NULL DEFAULT false
        );
        CREATE INDEX deliveries_by_org ON {schema}.deliveries (org_id, occurred_at, event_id);
        CREATE INDEX deliveries_by_invitation ON {schema}.deliveries (invitation_id);
        CREATE INDEX deliveries_to_send ON {schema}.deliveries (occurred_at, event_id)
            WHERE status IN ('pending', 'sending');
        CREATE INDEX deliveries_to_dead_letter ON {schema}.deliveries (event_id)
            WHERE status = 'failed' AND NOT dead_lettered;
        """,
    ),
    (
        2,
        # The delivery log is paged by the event's sequence in its organization: a new delivery always
        # comes after every page already read. Rows from before this column get their rank in the
        # org, which is below any later event's sequence (an org's n-th delivery has sequence >= n).
        """
        ALTER TABLE {schema}.deliveries ADD COLUMN sequence bigint;
        UPDATE {schema}.deliveries AS d SET sequence = ranked.n
            FROM (SELECT event_id, row_number() OVER (PARTITION BY org_id ORDER BY occurred_at, event_id) AS n
                  FROM {schema}.deliveries) AS ranked
            WHERE d.event_id = ranked.event_id;
        ALTER TABLE {schema}.deliveries ALTER COLUMN sequence SET NOT NULL;
        DROP INDEX {schema}.deliveries_by_org;
        CREATE UNIQUE INDEX deliveries_by_org ON {schema}.deliveries (org_id, sequence);
        """,
    ),
]


class NotifierProjection:
    def __init__(self, schema: str = LIVE_SCHEMA) -> None:
        self.schema = schema
        self.deliveries = DeliveryStore(schema)

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await migrate(connection, self.schema, MIGRATIONS)

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        if await self._apply(connection, events):
            await connection.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, self.schema)

    async def apply_positioned(self, connection: asyncpg.Connection, batch: PositionedBatch) -> None:
        """As `apply`, with the consumer's positions written in the statement that wakes the sender."""
        created = await self._apply(connection, batch.sort_out(await read_positions(connection, self.schema, batch.org_ids)))
        org_ids, sequences = batch.moved()
        if org_ids or created:
            await connection.execute(
                f"WITH moved AS ({moved_positions_sql(self.schema, 1, 2)}) SELECT pg_notify($3, $4) WHERE $5",
                org_ids,
                sequences,
                WAKE_CHANNEL,
                self.schema,
                created > 0,
            )

    async def _apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> int:
        """The events' rows; the number of deliveries created."""
        created = 0
        invited: list[Envelope] = []  # a run of `MemberInvited`, written in one statement
        for event in events:
            if event.event_type == "MemberInvited":
                invited.append(event)
                continue
            handler = _HANDLERS.get(event.event_type)
            if handler is None:  # changes nothing the run reads: the run goes on
                continue
            if invited:  # written before anything it reads (a name, an email, an invitation) changes
                created += await self._members_invited(connection, invited)
                invited = []
            created += await handler(self, connection, event)
        if invited:
            created += await self._members_invited(connection, invited)
        return created

    # each returns the number of deliveries it created

    async def _organization_created(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.OrganizationCreated)
        await connection.execute(
            f'INSERT INTO "{self.schema}".organizations VALUES ($1, $2) ON CONFLICT (org_id) DO UPDATE SET name = $2',
            event.org_id,
            storable(data.name),
        )
        await self._person(connection, event.org_id, data.owner_user_id, data.owner_email)
        return 0

    async def _members_invited(self, connection: asyncpg.Connection, events: list[Envelope]) -> int:
        """Each invitation (its first event stands) and each event's delivery: one round trip for the run."""
        run = []
        for event in events:
            data = event.typed_data()
            assert isinstance(data, ev.MemberInvited)
            run.append(
                Invited(
                    event_id=event.event_id,
                    org_id=event.org_id,
                    invitation_id=data.invitation_id,
                    recipient=storable(data.email),
                    expires_at=data.expires_at,
                    occurred_at=event.occurred_at,
                    sequence=event.sequence,
                    inviter_type=data.invited_by.type,
                    inviter_id=data.invited_by.id,
                    unnamed=unnamed_inviter(data.invited_by),
                )
            )
        return await self.deliveries.add_invited(connection, run)

    async def _invitation_resent(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.InvitationResent)
        await connection.execute(
            f"""UPDATE "{self.schema}".invitations SET expires_at = $2, current_event_id = $3
                WHERE invitation_id = $1""",
            data.invitation_id,
            data.expires_at,
            event.event_id,
        )
        await self.deliveries.skip_pending(connection, data.invitation_id, SUPERSEDED)
        return await self._delivery(connection, event, "resent", data.invitation_id, data.email, data.expires_at, event.actor)

    async def _invitation_revoked(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.InvitationRevoked)
        await self._close_invitation(connection, data.invitation_id, "revoked")
        return 0

    async def _invitation_accepted(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.InvitationAccepted)
        await self._close_invitation(connection, data.invitation_id, "accepted")
        await self._person(connection, event.org_id, data.user_id, data.email)
        return 0

    async def _api_key_created(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.ApiKeyCreated)
        await connection.execute(
            f'INSERT INTO "{self.schema}".api_keys VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
            event.org_id,
            data.key_id,
            storable(data.name),
        )
        return 0

    async def _close_invitation(self, connection: asyncpg.Connection, invitation_id: str, status: str) -> None:
        await connection.execute(
            f'UPDATE "{self.schema}".invitations SET status = $2 WHERE invitation_id = $1', invitation_id, status
        )
        await self.deliveries.skip_pending(connection, invitation_id, closed_reason(status))

    async def _person(self, connection: asyncpg.Connection, org_id: str, user_id: str, email: str) -> None:
        await connection.execute(
            f'INSERT INTO "{self.schema}".people VALUES ($1, $2, $3) ON CONFLICT (org_id, user_id) DO UPDATE SET email = $3',
            org_id,
            user_id,
            storable(email),
        )

    async def _delivery(
        self,
        connection: asyncpg.Connection,
        event: Envelope,
        kind: Kind,
        invitation_id: str,
        recipient: str,
        expires_at: datetime,
        inviter: Actor,
    ) -> int:
        org_name = await connection.fetchval(f'SELECT name FROM "{self.schema}".organizations WHERE org_id = $1', event.org_id)
        delivery = NewDelivery(
            event_id=event.event_id,
            org_id=event.org_id,
            invitation_id=invitation_id,
            kind=kind,
            recipient=storable(recipient),
            org_name=org_name or event.org_id,
            inviter=await self._inviter_name(connection, event.org_id, inviter),
            expires_at=expires_at,
            occurred_at=event.occurred_at,
            sequence=event.sequence,
        )
        return await self.deliveries.add(connection, delivery)

    async def _inviter_name(self, connection: asyncpg.Connection, org_id: str, actor: Actor) -> str:
        """How the email names who invited: a person by email, a key by its name (`store.add_invited`
        names a run's inviters the same way, in SQL)."""
        if actor.type == "user":
            email = await connection.fetchval(
                f'SELECT email FROM "{self.schema}".people WHERE org_id = $1 AND user_id = $2', org_id, actor.id
            )
            if email:
                return str(email)
        elif actor.type == "api_key":
            name = await connection.fetchval(
                f'SELECT name FROM "{self.schema}".api_keys WHERE org_id = $1 AND key_id = $2', org_id, actor.id
            )
            if name:
                return f"{KEY_INVITER}{name}"
        return unnamed_inviter(actor)


def unnamed_inviter(actor: Actor) -> str:
    """The inviter's name when nothing about them is stored: their id (a key's with its prefix), or
    a neutral wording for `scim` and `system`."""
    if actor.type == "user":
        return actor.id
    if actor.type == "api_key":
        return f"{KEY_INVITER}{actor.id}"
    if actor.type == "scim":
        return "your identity provider"
    return "the team"


def storable(text: str) -> str:
    """PostgreSQL's text refuses NUL alone of all characters. Membership refuses it now; an event
    from before keeps its place in the log, with U+FFFD where the NUL was (so such an address is
    refused at send time, with its reason, instead of parking the whole event)."""
    return text.replace("\x00", "\ufffd")


# `MemberInvited` is written a run at a time (`NotifierProjection.apply`).
_HANDLERS = {
    "OrganizationCreated": NotifierProjection._organization_created,
    "InvitationResent": NotifierProjection._invitation_resent,
    "InvitationRevoked": NotifierProjection._invitation_revoked,
    "InvitationAccepted": NotifierProjection._invitation_accepted,
    "ApiKeyCreated": NotifierProjection._api_key_created,
}
