"""The contract's check order: shape, organization, permission, plan, then target and business rules.

The first check that fails gives the reply, so a request failing several checks must get the
code of the earliest one.
"""

from __future__ import annotations

import json

import pytest

from shared.contract import commands as cmd
from shared.contract.replies import Reply
from shared.requests import reply_handler

from .builders import SYSTEM, api_key, full_org, new_org, user

OWNER = user("owner1")


def code_of(reply: Reply) -> str | None:
    return reply.error.code if reply.error is not None else None


# -- validation first ------------------------------------------------------------------------


def handle_over_the_wire(world, name: str, body: dict) -> dict:
    """Runs a raw JSON body through the strict decoder and the application, as the endpoint does."""
    calls = []

    async def handle(command: cmd.Command) -> Reply:
        calls.append(command)
        return await world.runner.run(name, command)

    encoded = world.loop.run(reply_handler(cmd.COMMANDS[name], handle)(json.dumps(body).encode()))
    return {"reply": json.loads(encoded), "reached_application": bool(calls)}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "role": "developer"},
        {"email": "a@example.com", "role": "Super User"},
        {"email": "a@example.com"},
        {"email": "a@example.com", "role": "developer", "colour": "blue"},
        {"email": "a@example.com", "role": "developer", "accept_charge_cents": -1},
    ],
    ids=["bad email", "malformed role", "missing role", "unknown field", "negative charge"],
)
def test_a_malformed_body_is_a_validation_error_even_for_an_unknown_org_and_a_stranger(body: dict) -> None:
    world = new_org("free")

    outcome = handle_over_the_wire(
        world, "invite_member", {"command_id": "c1", "org_id": "no-such-org", "actor": {"type": "user", "id": "stranger"}, **body}
    )

    assert outcome["reply"]["ok"] is False
    assert outcome["reply"]["error"]["code"] == "validation_error"
    assert outcome["reached_application"] is False


def test_an_unknown_permission_in_a_key_request_is_a_validation_error() -> None:
    world = new_org("pro")

    outcome = handle_over_the_wire(
        world,
        "create_api_key",
        {"command_id": "c1", "org_id": world.org_id, "actor": OWNER, "name": "k", "permissions": ["root:everything"]},
    )

    assert outcome["reply"]["error"]["code"] == "validation_error"


def test_a_well_formed_body_reaches_the_application() -> None:
    world = new_org("pro")

    outcome = handle_over_the_wire(
        world,
        "invite_member",
        {"command_id": "c1", "org_id": world.org_id, "actor": OWNER, "email": " A@Example.com", "role": "admin"},
    )

    assert outcome["reply"]["ok"] is True
    assert outcome["reached_application"] is True
    assert [i.email for i in world.app.view_organization(world.org_id).invitations] == ["a@example.com"]


# -- the organization before the permission --------------------------------------------------


@pytest.mark.parametrize(
    "actor",
    [user("stranger"), user("owner1"), SYSTEM, api_key("key_1")],
    ids=["non-member", "owner elsewhere", "platform", "key"],
)
@pytest.mark.parametrize(
    "name, fields",
    [
        ("invite_member", {"email": "a@example.com", "role": "owner"}),
        ("change_plan", {"plan": "enterprise"}),
        ("remove_member", {"user_id": "owner1"}),
        ("revoke_api_key", {"key_id": "key_1"}),
    ],
)
def test_an_unknown_organization_is_not_found_whoever_asks(actor: dict, name: str, fields: dict) -> None:
    world = new_org("pro")

    reply = world.run(name, actor, org_id="no-such-org", **fields)

    assert code_of(reply) == "not_found"


# -- the permission before the plan ------------------------------------------------------------


def test_a_principal_without_invite_permission_is_denied_before_the_free_plan_is_considered() -> None:
    # a free org holds only its owner; a developer-level principal is a key with developer permissions
    world = new_org("free")
    developer_like = world.create_key("dev-like", ["org:read", "members:read", "api_keys:own", "gateway:use"])

    by_key = world.run("invite_member", api_key(developer_like), email="a@example.com", role="developer")
    by_stranger = world.run("invite_member", user("stranger"), email="a@example.com", role="developer")

    assert code_of(by_key) == "permission_denied"
    assert code_of(by_stranger) == "permission_denied"


def test_inviting_an_owner_without_owners_manage_is_denied_before_the_free_plan_is_considered() -> None:
    world = new_org("free")
    inviter = world.create_key("inviter", ["members:invite"])

    assert code_of(world.run("invite_member", api_key(inviter), email="a@example.com", role="owner")) == "permission_denied"
    assert code_of(world.run("invite_member", api_key(inviter), email="a@example.com", role="admin")) == "plan_required"


def test_an_allowed_principal_on_the_free_plan_gets_plan_required() -> None:
    world = new_org("free")

    assert code_of(world.run("invite_member", OWNER, email="a@example.com", role="developer")) == "plan_required"


# -- the plan before the target --------------------------------------------------------------


def test_resending_an_unknown_invitation_on_the_free_plan_is_plan_required() -> None:
    world = new_org("free")

    assert code_of(world.run("resend_invitation", OWNER, invitation_id="inv_missing")) == "plan_required"


# -- the permission before the target -----------------------------------------------------------


@pytest.mark.parametrize(
    "actor, name, fields",
    [
        (user("dev1"), "change_role", {"user_id": "ghost", "role": "admin"}),
        (user("admin1"), "change_role", {"user_id": "ghost", "role": "owner"}),
        (user("dev1"), "remove_member", {"user_id": "ghost"}),
        (user("dev1"), "resend_invitation", {"invitation_id": "inv_missing"}),
        (user("dev1"), "revoke_invitation", {"invitation_id": "inv_missing"}),
        (user("dev1"), "revoke_api_key", {"key_id": "key_missing"}),
        (user("dev1"), "create_api_key", {"name": "k", "permissions": ["gateway:use"], "owner_user_id": "ghost"}),
        (user("stranger"), "change_role", {"user_id": "ghost", "role": "developer"}),
    ],
    ids=[
        "developer changes a ghost's role",
        "admin makes a ghost an owner",
        "developer removes a ghost",
        "developer resends a missing invitation",
        "developer revokes a missing invitation",
        "developer revokes a missing key",
        "developer creates a key for a ghost",
        "stranger changes a ghost's role",
    ],
)
def test_a_missing_permission_is_reported_before_a_missing_target(actor: dict, name: str, fields: dict) -> None:
    world = full_org()

    assert code_of(world.run(name, actor, **fields)) == "permission_denied"


@pytest.mark.parametrize(
    "actor, name, fields",
    [
        (user("admin1"), "change_role", {"user_id": "ghost", "role": "admin"}),
        (OWNER, "change_role", {"user_id": "ghost", "role": "owner"}),
        (user("admin1"), "remove_member", {"user_id": "ghost"}),
        (user("admin1"), "resend_invitation", {"invitation_id": "inv_missing"}),
        (user("admin1"), "revoke_invitation", {"invitation_id": "inv_missing"}),
        (user("admin1"), "revoke_api_key", {"key_id": "key_missing"}),
        (user("admin1"), "create_api_key", {"name": "k", "permissions": ["gateway:use"], "owner_user_id": "ghost"}),
        (user("dev1"), "accept_invitation", {"invitation_id": "inv_missing", "token": "t", "user_id": "dev1"}),
    ],
)
def test_an_allowed_principal_is_told_the_target_does_not_exist(actor: dict, name: str, fields: dict) -> None:
    world = full_org()

    assert code_of(world.run(name, actor, **fields)) == "not_found"


# -- the target before the business rules ----------------------------------------------------------


def test_a_missing_member_is_not_found_rather_than_last_owner() -> None:
    world = new_org("pro")

    assert code_of(world.run("remove_member", SYSTEM, user_id="ghost")) == "not_found"


def test_a_denied_seat_purchase_is_reported_before_the_missing_charge_acceptance() -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")
    world.invite("a@example.com")

    # admin lacks billing:manage and gave no accept_charge_cents: permission comes first
    assert code_of(world.run("invite_member", user("admin1"), email="b@example.com", role="developer")) == "permission_denied"
