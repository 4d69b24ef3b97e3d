"""The notifier writes a run of `MemberInvited` in one statement (real PostgreSQL). Whatever the
history (renames, keys, acceptances, resends and revocations between invitations, inviters stored or
not, redeliveries) and however it is cut into batches, the rows are exactly those the per-event path
(kept below as the oracle: the projection as it was before runs) writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.notifier.projection import WAKE_CHANNEL, NotifierProjection, storable
from shared.consumer import prepare
from shared.contract import events as ev
from shared.contract.events import Envelope

T0 = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)
RUNS, ONE_BY_ONE = "notifier_runs", "notifier_one_by_one"
TABLES = {
    "organizations": "org_id",
    "people": "org_id, user_id",
    "api_keys": "org_id, key_id",
    "invitations": "invitation_id",
    "deliveries": "event_id",
}


class PerEventProjection(NotifierProjection):
    """The oracle: every `MemberInvited` on its own, four statements, as before runs were written."""

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        created = 0
        for event in events:
            if event.event_type == "MemberInvited":
                created += await self._member_invited(connection, event)
            else:
                await super().apply(connection, [event])
        if created:
            await connection.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, self.schema)

    async def _member_invited(self, connection: asyncpg.Connection, event: Envelope) -> int:
        data = event.typed_data()
        assert isinstance(data, ev.MemberInvited)
        await connection.execute(
            f"""INSERT INTO "{self.schema}".invitations VALUES ($1, $2, $3, 'pending', $4, $5)
                ON CONFLICT (invitation_id) DO NOTHING""",
            data.invitation_id,
            event.org_id,
            storable(data.email),
            data.expires_at,
            event.event_id,
        )
        return await self._delivery(
            connection, event, "invited", data.invitation_id, data.email, data.expires_at, data.invited_by
        )


ORGS = ("org_a", "org_b")  # org_b may never be created: its emails are named by its id
NAMES = ("Acme", "Acme Renamed", "", "Nul\x00Corp")
EMAILS = ("a@acme.io", "b@acme.io", "", "nul\x00@acme.io")
INVITATIONS = ("inv_1", "inv_2", "inv_3")
USERS = ("owner", "u_inv_1", "ghost")
KEYS = ("key_1", "key_2")
ACTORS = (
    *({"type": "user", "id": user} for user in USERS),
    *({"type": "api_key", "id": key} for key in KEYS),
    {"type": "scim", "id": "okta"},
    {"type": "system", "id": "platform"},
)

INVITED = st.tuples(
    st.just("invited"), st.sampled_from(ORGS), st.sampled_from(INVITATIONS), st.sampled_from(ACTORS), st.sampled_from(EMAILS)
)
STEPS = st.one_of(
    INVITED,
    INVITED,  # twice as likely: runs get long
    st.tuples(st.just("created"), st.sampled_from(ORGS), st.sampled_from(NAMES), st.sampled_from(EMAILS)),  # or renamed
    st.tuples(st.just("key"), st.sampled_from(ORGS), st.sampled_from(KEYS), st.sampled_from(NAMES)),
    st.tuples(st.just("resent"), st.sampled_from(ORGS), st.sampled_from(INVITATIONS)),
    st.tuples(st.just("revoked"), st.sampled_from(ORGS), st.sampled_from(INVITATIONS)),
    st.tuples(
        st.just("accepted"), st.sampled_from(ORGS), st.sampled_from(INVITATIONS), st.sampled_from(USERS), st.sampled_from(EMAILS)
    ),
    st.tuples(st.just("ignored"), st.sampled_from(ORGS)),
    st.tuples(st.just("again"), st.integers(0, 60)),  # an earlier event delivered again
)


class Stream:
    def __init__(self) -> None:
        self.sequences = dict.fromkeys(ORGS, 0)
        self.events: list[Envelope] = []

    def event(self, event_type: str, org_id: str, data: dict[str, Any], actor: dict[str, str] | None = None) -> None:
        self.sequences[org_id] += 1
        at = T0 + timedelta(minutes=len(self.events))
        envelope = {
            "event_id": f"evt_{uuid.uuid4().hex}",
            "event_type": event_type,
            "schema_version": 1,
            "org_id": org_id,
            "sequence": self.sequences[org_id],
            "occurred_at": at,
            "actor": actor or {"type": "user", "id": "owner"},
            "command_id": f"cmd-{len(self.events)}",
            "correlation_id": None,
            "data": data,
        }
        self.events.append(msgspec.convert(msgspec.to_builtins(envelope), Envelope))

    def step(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        at = T0 + timedelta(minutes=len(self.events))
        if kind == "again":
            if self.events:
                self.events.append(self.events[args[0] % len(self.events)])
        elif kind == "created":
            org_id, name, email = args
            owner = {"name": name, "plan": "pro", "owner_user_id": "owner", "owner_email": email}
            self.event(
                "OrganizationCreated", org_id, {**owner, "seats_included": 3, "unit_price_cents": 1000, "billing_anchor": at}
            )
        elif kind == "key":
            org_id, key_id, name = args
            self.event(
                "ApiKeyCreated",
                org_id,
                {"key_id": key_id, "name": name, "prefix": "tm_", "owner_user_id": None, "permissions": [], "expires_at": None},
            )
        elif kind == "invited":
            org_id, invitation_id, actor, email = args
            data = {"invitation_id": invitation_id, "email": email, "role": "developer", "invited_by": actor}
            self.event("MemberInvited", org_id, {**data, "expires_at": at + timedelta(days=7)}, actor)
        elif kind == "resent":
            org_id, invitation_id = args
            email = f"{invitation_id}@acme.io"
            self.event(
                "InvitationResent", org_id, {"invitation_id": invitation_id, "email": email, "expires_at": at + timedelta(days=7)}
            )
        elif kind == "revoked":
            org_id, invitation_id = args
            self.event("InvitationRevoked", org_id, {"invitation_id": invitation_id, "email": f"{invitation_id}@acme.io"})
        elif kind == "accepted":
            org_id, invitation_id, user_id, email = args
            data = {"invitation_id": invitation_id, "user_id": user_id, "email": email, "role": "developer"}
            self.event("InvitationAccepted", org_id, data)
        else:
            self.event("MemberRemoved", args[0], {"user_id": "ghost", "email": "ghost@acme.io", "role": "developer"})


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def fresh(pool: asyncpg.Pool, projection: NotifierProjection) -> NotifierProjection:
    async with pool.acquire() as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{projection.schema}" CASCADE')
        await prepare(connection, projection)
    return projection


async def apply(pool: asyncpg.Pool, projection: NotifierProjection, batch: list[Envelope]) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await projection.apply(connection, batch)


async def contents(pool: asyncpg.Pool, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(row) for row in await pool.fetch(f'SELECT * FROM "{schema}".{table} ORDER BY {order}')]
        for table, order in TABLES.items()
    }


def batches(events: list[Envelope], sizes: list[int]) -> list[list[Envelope]]:
    cut, start = [], 0
    for size in sizes:
        cut.append(events[start : start + size])
        start += size
    return [*cut, events[start:]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEPS, min_size=1, max_size=40), sizes=st.lists(st.integers(1, 12), max_size=8))
async def test_runs_of_invitations_write_the_rows_the_per_event_path_writes(pool, steps, sizes):
    stream = Stream()
    for step in steps:
        stream.step(step)
    one_by_one = await fresh(pool, PerEventProjection(ONE_BY_ONE))
    await apply(pool, one_by_one, stream.events)
    runs = await fresh(pool, NotifierProjection(RUNS))
    for batch in batches(stream.events, sizes):
        await apply(pool, runs, batch)

    assert await contents(pool, RUNS) == await contents(pool, ONE_BY_ONE)


async def test_a_run_names_each_inviter_as_stored_when_the_run_starts_and_adds_each_delivery_once(pool):
    stream = Stream()
    for step in [
        ("created", "org_a", "Acme", "boss@acme.io"),
        ("key", "org_a", "key_1", "CI bot"),
        ("invited", "org_a", "inv_1", {"type": "user", "id": "owner"}, "a@acme.io"),
        ("invited", "org_a", "inv_2", {"type": "api_key", "id": "key_1"}, "b@acme.io"),
        ("invited", "org_a", "inv_3", {"type": "user", "id": "ghost"}, "c@acme.io"),
        ("invited", "org_b", "inv_4", {"type": "api_key", "id": "key_9"}, "d@acme.io"),
        ("invited", "org_a", "inv_1", {"type": "scim", "id": "okta"}, "e@acme.io"),  # the first inv_1 stands
        ("ignored", "org_a"),
        ("invited", "org_a", "inv_5", {"type": "system", "id": "platform"}, "f@acme.io"),
        ("created", "org_a", "Acme Renamed", "new-boss@acme.io"),  # a rename: later emails only
        ("invited", "org_a", "inv_6", {"type": "user", "id": "owner"}, "g@acme.io"),
    ]:
        stream.step(step)
    projection = await fresh(pool, NotifierProjection(RUNS))
    await apply(pool, projection, [*stream.events, *stream.events[2:5]])
    await apply(pool, projection, stream.events)  # delivered again: nothing new

    deliveries = await pool.fetch(f'SELECT recipient, org_name, inviter, status FROM "{RUNS}".deliveries ORDER BY occurred_at')
    assert [tuple(row) for row in deliveries] == [
        ("a@acme.io", "Acme", "boss@acme.io", "pending"),
        ("b@acme.io", "Acme", "API key CI bot", "pending"),
        ("c@acme.io", "Acme", "ghost", "pending"),
        ("d@acme.io", "org_b", "API key key_9", "pending"),
        ("e@acme.io", "Acme", "your identity provider", "pending"),
        ("f@acme.io", "Acme", "the team", "pending"),
        ("g@acme.io", "Acme Renamed", "new-boss@acme.io", "pending"),
    ]
    invitation = await pool.fetchrow(
        f'SELECT email, current_event_id FROM "{RUNS}".invitations WHERE invitation_id = $1', "inv_1"
    )
    assert tuple(invitation) == ("a@acme.io", stream.events[2].event_id)
