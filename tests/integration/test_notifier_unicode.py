"""Whatever text membership accepts (any Unicode except C0/C1 controls, DEL, U+2028/2029 and bidi
overrides; names up to 200 characters) goes through the notifier's projection into PostgreSQL and
out as an email without a single failure, and reads back as itself."""

from __future__ import annotations

import uuid

import asyncpg
import markupsafe
import pytest
from hypothesis import HealthCheck, given, settings

from services.notifier.mail import OutgoingEmail
from services.notifier.projection import LIVE_SCHEMA, NotifierProjection
from services.notifier.sender import Sender
from shared.clock import FixedClock
from shared.consumer import ACK, apply_in_order, prepare
from tests.integration.test_notifier_projection import SETTINGS, T0, WEEK, History, RecordingMailer
from tests.unit.test_notifier_headers import OUR_HEADERS, names, on_the_wire, read_back


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as connection:
        await prepare(connection, NotifierProjection(LIVE_SCHEMA))
    yield pool
    await pool.close()


class KeepingEnvelopes(RecordingMailer):
    def __init__(self) -> None:
        super().__init__()
        self.emails: list[OutgoingEmail] = []

    async def send(self, email) -> None:
        await super().send(email)
        self.emails.append(email)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(org_name=names, key_name=names)
async def test_any_name_membership_accepts_is_stored_and_mailed_as_it_is(pool, org_name, key_name):
    history = History(org_id=f"org_{uuid.uuid4().hex[:12]}", name=org_name)
    history.event(
        "ApiKeyCreated",
        T0,
        {
            "key_id": "key_1",
            "name": key_name,
            "prefix": "tm_x",
            "owner_user_id": "owner",
            "permissions": ["members:manage"],
            "expires_at": None,
        },
    )
    by_key = history.event(
        "MemberInvited",
        T0,
        {
            "invitation_id": f"inv_{uuid.uuid4().hex[:12]}",
            "email": "by.key@example.com",
            "role": "developer",
            "invited_by": {"type": "api_key", "id": "key_1"},
            "expires_at": T0 + WEEK,
        },
        actor={"type": "api_key", "id": "key_1"},
    )
    by_owner = history.invited(f"inv_{uuid.uuid4().hex[:12]}")
    async with pool.acquire() as connection, connection.transaction():
        verdicts = await apply_in_order(connection, NotifierProjection(LIVE_SCHEMA), history.events)
    assert set(verdicts) == {ACK}, verdicts

    stored = await pool.fetchrow(f"SELECT name FROM {LIVE_SCHEMA}.organizations WHERE org_id = $1", history.org_id)
    assert stored["name"] == org_name
    rows = {
        r["event_id"]: r for r in await pool.fetch(f"SELECT * FROM {LIVE_SCHEMA}.deliveries WHERE org_id = $1", history.org_id)
    }
    assert rows[by_key.event_id]["org_name"] == org_name and rows[by_key.event_id]["inviter"] == f"API key {key_name}"

    mailer = KeepingEnvelopes()
    sender = Sender(
        pool,
        None,
        LIVE_SCHEMA,
        mailer,
        SETTINGS,
        FixedClock(T0),
        public_url="https://app.test",
        server_secret="s",
        database_url="",
    )
    while await sender.send_next():
        pass
    statuses = {
        r["event_id"]: (r["status"], r["last_error"])
        for r in await pool.fetch(
            f"SELECT event_id, status, last_error FROM {LIVE_SCHEMA}.deliveries WHERE org_id = $1", history.org_id
        )
    }
    assert statuses == {by_key.event_id: ("sent", None), by_owner.event_id: ("sent", None)}

    inviters = {"by.key@example.com": f"API key {key_name}", by_owner.typed_data().email: "owner@acme.io"}
    for email in mailer.emails:
        message = read_back(on_the_wire(email))
        assert message.keys() == OUR_HEADERS
        assert message["Subject"] == f"{inviters[email.envelope_to]} invited you to join {org_name} on Team Members"
        assert org_name in message.get_body(("plain",)).get_content()
        assert str(markupsafe.escape(org_name)) in message.get_body(("html",)).get_content()
