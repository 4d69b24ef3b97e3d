"""Membership against a hostile caller, on real servers: command records on PostgreSQL, replays and
volume over NATS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError

from services.membership.application import MembershipApplication
from services.membership.idempotency import CommandFingerprint
from services.membership.runner import CommandRunner
from services.membership.secrets import Secrets
from shared import subjects
from shared.clock import FixedClock
from shared.contract import commands as cmd
from shared.settings import postgres_env
from teamctl.client import Client
from tests.servers import fresh_server_secret

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SYSTEM = {"type": "system", "id": "platform"}
OWNER = {"type": "user", "id": "owner-1"}


def decide(app: MembershipApplication, org_id: str, command_name: str, command_id: str, /, **fields):
    body = msgspec.convert({"command_id": command_id, "actor": OWNER, "org_id": org_id, **fields}, cmd.COMMANDS[command_name])
    return app.decide(org_id, command_name, body, CommandFingerprint.of(command_name, body))


@pytest.fixture
def app(database_url: str):
    application = MembershipApplication(
        FixedClock(T0), Secrets(fresh_server_secret()), env=postgres_env(database_url, pool_size=2)
    )
    created = decide(
        application,
        "acme",
        "create_organization",
        "create",
        name="Acme",
        plan="pro",
        owner={"user_id": "owner-1", "email": "o@acme.io"},
    )
    application.record([created])
    yield application
    application.close()


def stored_events(app: MembershipApplication) -> int:
    return len(app.recorder.select_notifications(1, 10_000))


def test_a_success_whose_events_conflict_leaves_no_command_record(app):
    doomed = decide(app, "acme", "invite_member", "doomed", email="a@acme.io", role="developer")
    app.record([decide(app, "acme", "invite_member", "rival", email="b@acme.io", role="developer")])

    with pytest.raises(IntegrityError):
        app.record([doomed])

    assert app.commands.find_command("doomed", T0 - timedelta(days=1)) is None
    assert stored_events(app) == 2


def test_a_success_whose_command_record_conflicts_saves_no_event(app, monkeypatch):
    app.record([decide(app, "acme", "invite_member", "twice", email="a@acme.io", role="developer")])
    # another instance that had not yet seen the record decides the same command on the newer state
    monkeypatch.setattr(app.commands, "find_command", lambda *_: None)
    events_only = app.commands.command_and_events_after  # the command path's read: record and newer events together
    monkeypatch.setattr(app.commands, "command_and_events_after", lambda *args: (None, events_only(*args)[1]))
    racing = decide(app, "acme", "invite_member", "twice", email="b@acme.io", role="developer")
    assert racing.recorded[0].originator_version == 3  # no event conflict: only the record's key can refuse it

    with pytest.raises(IntegrityError):
        app.record([racing])

    assert stored_events(app) == 2
    app.evict("acme")
    assert [i.email for i in app.organization("acme").invitations.values()] == ["a@acme.io"]


def test_records_past_the_window_are_deleted_from_the_table(app):
    app.record([decide(app, "acme", "invite_member", "old", email="a@acme.io", role="developer")])
    app.clock.advance(hours=25)
    app.remember(decide(app, "acme", "change_role", "fresh", user_id="nobody", role="admin"))  # a not_found refusal

    assert app.forget_commands(app.clock.now()) == 2  # the creation and the invitation
    assert app.commands.find_command("old", T0 - timedelta(days=9)) is None
    assert app.commands.find_command("fresh", T0) is not None


async def test_a_stranger_replaying_a_key_command_id_over_the_bus_learns_nothing(membership, nc):
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    key = await client.command(
        "create_api_key", command_id="X", org_id=org_id, actor=OWNER, name="billing", permissions=["billing:manage"]
    )
    assert key["ok"]

    raw = await nc.request(
        subjects.command("remove_member"),
        msgspec.json.encode(
            {"command_id": "X", "org_id": org_id, "actor": {"type": "user", "id": "mallory"}, "user_id": "owner-1"}
        ),
        timeout=5,
    )

    assert key["result"]["secret"].encode() not in raw.data
    reply = msgspec.json.decode(raw.data)
    assert (reply["ok"], reply["error"]["code"], reply["error"]["details"]) == (
        False,
        "conflict",
        {"reason": "command_id_reused"},
    )
    repeat = await client.command(
        "create_api_key", command_id="X", org_id=org_id, actor=OWNER, name="billing", permissions=["billing:manage"]
    )
    assert repeat == key


async def test_after_thousands_of_invite_and_revoke_cycles_membership_lists_still_answer_in_pages(membership, nc):
    client = Client(nc)
    orgs, cycles = 4, 400
    org_ids = []
    for n in range(orgs):
        created = await client.command(
            "create_organization", name=f"Org {n}", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
        )
        org_ids.append(created["result"]["org_id"])

    async def churn(org_id: str) -> None:
        for k in range(cycles):
            invited = await client.command("invite_member", org_id=org_id, actor=OWNER, email=f"p{k}@acme.io", role="developer")
            assert invited["ok"], invited
            revoked = await client.command(
                "revoke_invitation", org_id=org_id, actor=OWNER, invitation_id=invited["result"]["invitation_id"]
            )
            assert revoked["ok"], revoked

    await asyncio.gather(*(churn(org_id) for org_id in org_ids))

    org_id = org_ids[0]
    whole = await nc.request(
        subjects.query("membership", "get_organization"), msgspec.json.encode({"org_id": org_id}), timeout=10
    )
    assert len(whole.data) < nc.max_payload
    view = msgspec.json.decode(whole.data)["result"]
    assert len(view["invitations"]) == 100 and view["invitations_next_cursor"]

    seen, cursor, pages = set(), view["invitations_next_cursor"], 1
    while cursor:
        raw = await nc.request(
            subjects.query("membership", "invitations"),
            msgspec.json.encode({"org_id": org_id, "cursor": cursor, "limit": 1000}),
            timeout=10,
        )
        assert len(raw.data) < nc.max_payload
        page = msgspec.json.decode(raw.data)["result"]
        seen |= {i["invitation_id"] for i in page["invitations"]}
        cursor, pages = page["next_cursor"], pages + 1
    assert len(seen) == cycles - 100 and pages == 2
    assert {i["invitation_id"] for i in view["invitations"]}.isdisjoint(seen)

    revoked = await client.query("membership", "invitations", org_id=org_id, status="revoked", limit=1000)
    assert len(revoked["result"]["invitations"]) == cycles
    bad = await client.query("membership", "members", org_id=org_id, cursor="not-a-cursor")
    assert bad["error"]["code"] == "validation_error"


async def test_an_org_id_with_a_trailing_newline_is_refused_and_the_relay_keeps_publishing(membership, nc):
    client = Client(nc)
    poisoned = await client.command(
        "create_organization",
        org_id="evil\n",
        actor=OWNER,
        name="Acme",
        plan="pro",
        owner={"user_id": "owner-1", "email": "o@acme.io"},
    )
    assert poisoned["error"]["code"] == "validation_error"
    healthy = await client.command(
        "create_organization", actor=OWNER, name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    assert healthy["ok"], healthy

    sub = await nc.jetstream().subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    try:
        first = await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()
    assert first.headers["Nats-Msg-Id"] == healthy["events"][0]


async def test_the_invitation_behind_a_link_over_the_bus(membership, nc):
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    invited = await client.command("invite_member", org_id=org_id, actor=OWNER, email="dev@acme.io", role="developer")
    invitation_id = invited["result"]["invitation_id"]

    forged = await client.query("membership", "invitation", invitation_id=invitation_id, token="wrong")
    unknown = await client.query("membership", "invitation", invitation_id="inv_nobody", token="wrong")
    assert (forged["error"]["code"], unknown["error"]["code"]) == ("invalid_token", "not_found")

    from shared.invitations import invitation_token

    expires_at = datetime.fromisoformat(invited["result"]["expires_at"].replace("Z", "+00:00"))
    token = invitation_token(membership.env["SERVER_SECRET"], invitation_id, expires_at)
    shown = await client.query("membership", "invitation", invitation_id=invitation_id, token=token)
    assert shown["ok"], shown
    assert {k: shown["result"][k] for k in ("org_id", "org_name", "email", "role", "status")} == {
        "org_id": org_id,
        "org_name": "Acme",
        "email": "dev@acme.io",
        "role": "developer",
        "status": "pending",
    }
    assert shown["result"]["invited_by"] == OWNER


async def test_a_thousand_keys_with_long_names_are_listed_in_pages_that_fit_the_bus(membership, nc):
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    for n in range(1000):
        made = await client.command(
            "create_api_key", org_id=org_id, actor=OWNER, name=f"{n:04}" + "\U0001f600" * 196, permissions=["org:read"]
        )
        assert made["ok"], made

    seen, cursor = [], None
    while True:
        page = await client.query("membership", "api_keys", org_id=org_id, limit=1000, **({"cursor": cursor} if cursor else {}))
        assert page["ok"], page
        seen += [k["key_id"] for k in page["result"]["api_keys"]]
        cursor = page["result"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 1000


def test_an_instance_with_a_cached_organization_decides_on_what_another_instance_saved(app, database_url):
    """The command path reads the command's record and the cached organization's newer events in one statement."""
    other = MembershipApplication(app.clock, app.secrets, env=postgres_env(database_url, pool_size=2))
    try:
        app.organization("acme")  # cached here at version 1
        saved_there = []
        for number, email in enumerate(["a@acme.io", "b@acme.io"]):
            saved_there.append(decide(other, "acme", "invite_member", f"there-{number}", email=email, role="developer"))
            other.record([saved_there[-1]])

        repeat = decide(app, "acme", "invite_member", "there-1", email="b@acme.io", role="developer")
        assert not repeat.needs_saving
        assert msgspec.json.encode(repeat.reply) == msgspec.json.encode(saved_there[1].reply)  # found beside two newer events

        refused = decide(app, "acme", "invite_member", "here-0", email="a@acme.io", role="developer")
        assert not refused.reply.ok and refused.reply.error.code == "conflict"  # the invitation saved there is seen here

        fresh = decide(app, "acme", "invite_member", "here-1", email="c@acme.io", role="developer", accept_charge_cents=10**9)
        assert fresh.reply.ok, fresh.reply
        assert fresh.recorded[0].originator_version == 4  # a seat bought after the two invitations saved there
        app.record([fresh])
        assert sorted(i.email for i in other.organization_for_change("acme").invitations.values()) == [
            "a@acme.io",
            "b@acme.io",
            "c@acme.io",
        ]
    finally:
        other.close()


async def test_a_decision_from_memory_on_a_stale_instance_is_refused_by_the_store_and_decided_again_on_what_it_holds(
    app, database_url, monkeypatch
):
    """The runner decides from the cached organization without reading the store; the save's
    versions and the command record's key are what keep another instance's writes and repeats
    from being overwritten or applied twice."""
    other = MembershipApplication(app.clock, app.secrets, env=postgres_env(database_url, pool_size=2))
    runner = CommandRunner(app)  # saves directly: one decision per transaction
    read_the_store = []
    decide_reading = app.decide
    monkeypatch.setattr(app, "decide", lambda *args: read_the_store.append(args[2].command_id) or decide_reading(*args))

    async def run(command_name: str, command_id: str, /, **fields):
        body = msgspec.convert({"command_id": command_id, "actor": OWNER, "org_id": "acme", **fields}, cmd.COMMANDS[command_name])
        return await runner.run(command_name, body)

    try:
        app.organization("acme")  # cached here at version 1
        saved_there = []
        for number, email in enumerate(["a@acme.io", "b@acme.io"]):
            saved_there.append(decide(other, "acme", "invite_member", f"there-{number}", email=email, role="developer"))
            other.record([saved_there[-1]])

        # A repeat of what the other instance saved: from memory it would be a new invitation at version 2.
        repeat = await run("invite_member", "there-1", email="b@acme.io", role="developer")
        assert msgspec.json.encode(repeat) == msgspec.json.encode(saved_there[1].reply)
        assert read_the_store == ["there-1"] and stored_events(app) == 3

        # From memory a@ is free; the store holds its invitation.
        refused = await run("invite_member", "here-0", email="a@acme.io", role="developer")
        assert not refused.ok and refused.error.code == "conflict", refused
        assert stored_events(app) == 3

        # Now cached as stored: from memory, with no read, saved after what the other instance saved.
        read_the_store.clear()
        bought = await run("add_seats", "seats-1", quantity=1, accept_charge_cents=10**9)
        assert bought.ok and read_the_store == [] and stored_events(app) == 4

        # A repeat that from memory buys a second seat, at the next free version: only the record's key refuses it.
        again = await run("add_seats", "seats-1", quantity=1, accept_charge_cents=10**9)
        assert msgspec.json.encode(again) == msgspec.json.encode(bought)
        assert read_the_store == ["seats-1"] and stored_events(app) == 4
        assert other.organization_for_change("acme").seats_purchased == 1
    finally:
        other.close()


async def test_an_organization_known_from_the_stream_to_be_newer_is_read_from_the_store_before_deciding(
    app, database_url, monkeypatch
):
    """The stream's news (the access index's versions, here given by hand) keeps a stale cache from
    costing a refused save: the runner reads the store first."""
    other = MembershipApplication(app.clock, app.secrets, env=postgres_env(database_url, pool_size=2))
    heard_of = {"acme": 1}
    runner = CommandRunner(app, known_version=lambda org_id: heard_of.get(org_id, 0))
    read_the_store = []
    decide_reading = app.decide
    monkeypatch.setattr(app, "decide", lambda *args: read_the_store.append(args[2].command_id) or decide_reading(*args))
    saves = []
    record = app.record
    monkeypatch.setattr(app, "record", lambda decisions: saves.append(len(decisions)) or record(decisions))

    async def run(command_name: str, command_id: str, /, **fields):
        body = msgspec.convert({"command_id": command_id, "actor": OWNER, "org_id": "acme", **fields}, cmd.COMMANDS[command_name])
        return await runner.run(command_name, body)

    try:
        app.organization("acme")  # cached here at version 1
        other.record([decide(other, "acme", "invite_member", "there-0", email="a@acme.io", role="developer")])
        heard_of["acme"] = 2

        invited = await run("invite_member", "here-0", email="b@acme.io", role="developer")

        assert invited.ok, invited
        assert read_the_store == ["here-0"] and saves == [1]  # read first, saved once: no refused save
        assert stored_events(app) == 3
    finally:
        other.close()
