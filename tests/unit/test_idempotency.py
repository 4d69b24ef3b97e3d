"""A repeated command_id gets the first reply back and records nothing new."""

from __future__ import annotations

import hashlib

import msgspec

from services.membership.idempotency import CommandFingerprint
from shared import subjects
from shared.contract import commands as cmd
from shared.contract.common import Actor
from tests.fuzzing.corpus import Team, valid_bodies

from .builders import SYSTEM, full_org, new_app, new_org, user, wire

OWNER = user("owner1")
NEW_ORG = {"name": "Globex", "plan": "pro", "owner": {"user_id": "hank", "email": "hank@example.com"}}


def test_create_organization_without_an_org_id_repeated_returns_the_same_org_and_records_once() -> None:
    world = new_app()

    first = world.run("create_organization", SYSTEM, command_id="create-globex", **NEW_ORG)
    recorded = world.count_recorded()
    second = world.run("create_organization", SYSTEM, command_id="create-globex", **NEW_ORG)

    assert first.ok
    assert wire(second) == wire(first)
    assert second.result["org_id"] == first.result["org_id"] and second.events == first.events
    assert world.count_recorded() == recorded == 1


def test_create_organization_with_another_command_id_creates_another_org() -> None:
    world = new_app()

    first = world.run("create_organization", SYSTEM, command_id="create-1", **NEW_ORG)
    second = world.run("create_organization", SYSTEM, command_id="create-2", **NEW_ORG)

    assert first.ok and second.ok
    assert first.result["org_id"] != second.result["org_id"]
    assert world.count_recorded() == 2


def test_create_organization_with_an_explicit_org_id_is_idempotent_but_a_new_command_for_it_conflicts() -> None:
    world = new_app()

    first = world.run("create_organization", SYSTEM, command_id="c1", org_id="globex", **NEW_ORG)
    repeat = world.run("create_organization", SYSTEM, command_id="c1", org_id="globex", **NEW_ORG)
    other = world.run("create_organization", SYSTEM, command_id="c2", org_id="globex", **NEW_ORG)

    assert wire(repeat) == wire(first)
    assert other.error is not None and other.error.code == "conflict"
    assert world.count_recorded() == 1


def test_invite_member_repeated_returns_the_same_invitation_and_uses_one_seat() -> None:
    world = new_org("pro")

    first = world.run("invite_member", OWNER, command_id="invite-a", email="a@example.com", role="developer")
    recorded = world.count_recorded()
    second = world.run("invite_member", OWNER, command_id="invite-a", email="a@example.com", role="developer")

    assert first.ok
    assert wire(second) == wire(first)
    assert world.count_recorded() == recorded
    assert world.quote()["seats_used"] == 2


def test_a_repeat_returns_the_first_reply_even_after_the_clock_moved_on() -> None:
    world = new_org("pro")
    first = world.run("invite_member", OWNER, command_id="invite-a", email="a@example.com", role="developer")
    recorded = world.count_recorded()
    world.clock.advance(hours=23)  # inside the 24-hour window

    second = world.run("invite_member", OWNER, command_id="invite-a", email="a@example.com", role="developer")

    assert wire(second) == wire(first)
    assert world.count_recorded() == recorded


def test_a_repeat_with_a_different_body_is_a_conflict_that_reveals_nothing() -> None:
    world = new_org("pro")
    world.run("invite_member", OWNER, command_id="invite-a", email="a@example.com", role="developer")
    recorded = world.count_recorded()

    second = world.run("invite_member", OWNER, command_id="invite-a", email="b@example.com", role="admin")

    assert second.error is not None and (second.error.code, second.error.details) == ("conflict", {"reason": "command_id_reused"})
    assert second.result is None and second.events is None
    assert world.count_recorded() == recorded
    assert [i.email for i in world.app.view_organization(world.org_id).invitations] == ["a@example.com"]


def test_an_invitation_that_bought_a_seat_repeated_buys_nothing_more() -> None:
    world = new_org("pro")
    world.invite("a@example.com", by=OWNER)
    world.invite("b@example.com", by=OWNER)

    first = world.run(
        "invite_member", OWNER, command_id="invite-c", email="c@example.com", role="developer", accept_charge_cents=1000
    )
    recorded = world.count_recorded()
    second = world.run(
        "invite_member", OWNER, command_id="invite-c", email="c@example.com", role="developer", accept_charge_cents=1000
    )

    assert len(first.events) == 2
    assert wire(second) == wire(first)
    assert world.count_recorded() == recorded
    assert world.quote()["seats_purchased"] == 1


def test_create_api_key_repeated_returns_the_same_key_and_the_same_secret() -> None:
    world = new_org("pro")

    first = world.run("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])
    recorded = world.count_recorded()
    second = world.run("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])

    assert first.ok
    assert wire(second) == wire(first)
    assert second.result["secret"] == first.result["secret"]
    assert second.result["key_id"] == first.result["key_id"]
    assert world.count_recorded() == recorded
    assert len(world.app.organization(world.org_id).api_keys) == 1
    world.key_secrets[first.result["key_id"]] = first.result["secret"]
    assert world.authorize_key(first.result["key_id"], "gateway:use")["allowed"] is True


def test_remove_member_repeated_returns_the_same_revoked_keys() -> None:
    world = full_org()

    first = world.run("remove_member", OWNER, command_id="rm-dev1", user_id="dev1")
    recorded = world.count_recorded()
    second = world.run("remove_member", OWNER, command_id="rm-dev1", user_id="dev1")

    assert first.ok and first.result["revoked_api_keys"] == [world.keys["own:dev1"]]
    assert wire(second) == wire(first)
    assert world.count_recorded() == recorded


def test_add_seats_repeated_charges_once() -> None:
    world = new_org("pro")
    world.clock.advance(days=15)

    first = world.run("add_seats", OWNER, command_id="seats-1", quantity=1, accept_charge_cents=1000)
    world.clock.advance(days=1)
    second = world.run("add_seats", OWNER, command_id="seats-1", quantity=1, accept_charge_cents=1000)

    assert wire(second) == wire(first)
    assert world.quote()["seats_purchased"] == 1


def test_event_ids_are_unique_across_commands() -> None:
    world = full_org()

    event_ids = [e.event_id for e in world.recorded()]

    assert len(event_ids) == len(set(event_ids))
    assert all(e.command_id for e in world.recorded())


def test_a_fingerprint_hashes_the_body_as_recorded_ones_were() -> None:
    """Records in the store hold fingerprints computed with `msgspec.structs.replace`: a repeat must hash the same."""
    team = Team("acme", "owner1", "dev1", "inv_1", "key_1", "evt_1")
    for subject, body in valid_bodies(team).items():
        name = subject.removeprefix(subjects.COMMAND_PREFIX + ".")
        if name not in cmd.COMMANDS:
            continue
        command = msgspec.json.decode(msgspec.json.encode(body), type=cmd.COMMANDS[name])
        as_recorded = msgspec.structs.replace(command, command_id="-", correlation_id=None)
        fingerprint = CommandFingerprint.of(name, command)
        assert fingerprint.body_hash == hashlib.sha256(msgspec.json.encode(as_recorded)).hexdigest(), name
        assert (command.command_id, command.correlation_id) == ("fuzz-valid", "fuzz-corr")  # the command itself is untouched
    invite = cmd.InviteMember(
        command_id="c1", org_id="acme", actor=Actor(type="user", id="owner1"), email="A@B.io", role="developer"
    )
    assert CommandFingerprint.of("invite_member", invite).body_hash == (
        "026c62150a68169059d0a486640d39f6d24f03afdd827492d35a71551b9b3cc1"
    )
