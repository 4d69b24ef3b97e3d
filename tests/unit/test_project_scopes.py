"""Project scopes (contract v1.4): who may be scoped, who may scope whom, and what a scope allows."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.audit.entries import metadata_of
from services.membership.domain.organization import Organization
from services.membership.domain.values import VALUE_TRANSCODINGS, ApiKey, Member
from services.membership.publication import envelope_of
from shared.contract.common import PROJECT_PERMISSIONS, Actor
from shared.contract.events import EVENT_DATA, Envelope, decode_envelope

from .builders import SYSTEM, T0, World, email_of, full_org, new_org, user
from .test_check_order import handle_over_the_wire


def error_of(reply: Any) -> tuple[str, dict[str, Any]]:
    assert reply.error is not None, reply
    return reply.error.code, reply.error.details


def scoped_member(world: World, user_id: str, role: str, projects: list[str]) -> str:
    invitation = world.invite(email_of(user_id), role, projects=projects, accept_charge_cents=1_000_000)
    assert world.accept(invitation, user_id).ok
    return user_id


def command_body(world: World, command: str, /, **fields: Any) -> dict[str, Any]:
    return {"command_id": f"raw-{command}-{len(fields)}", "org_id": world.org_id, "actor": user(world.owner_id), **fields}


# -- the shape -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "projects",
    [[], ["p1", "p1"], ["bad id"], ["x" * 65], [f"p{n}" for n in range(101)], "p1"],
    ids=["empty", "duplicate", "space", "too-long-id", "too-many", "not-a-list"],
)
@pytest.mark.parametrize("name", ["create_api_key", "invite_member", "change_role"])
def test_a_malformed_scope_is_a_validation_error_and_changes_nothing(name: str, projects: Any) -> None:
    world = full_org()
    before = world.count_recorded()
    fields = {
        "create_api_key": {"name": "ci", "permissions": ["gateway:use"]},
        "invite_member": {"email": "new@example.com", "role": "developer"},
        "change_role": {"user_id": "dev1", "role": "developer"},
    }[name]
    outcome = handle_over_the_wire(world, name, command_body(world, name, **fields, projects=projects))
    assert outcome["reply"]["error"]["code"] == "validation_error"
    assert not outcome["reached_application"]
    assert world.count_recorded() == before


def test_change_role_refuses_a_null_scope_and_both_ways_of_saying_it() -> None:
    world = full_org()
    for extra in ({"projects": None}, {"projects": ["p1"], "every_project": True}):
        body = command_body(world, "change_role", user_id="dev1", role="developer", **extra)
        assert handle_over_the_wire(world, "change_role", body)["reply"]["error"]["code"] == "validation_error"


def test_a_hundred_distinct_projects_are_fine() -> None:
    world = full_org()
    key = world.create_key("wide", ["gateway:use"], projects=[f"p{n}" for n in range(100)])
    assert world.authorize_key(key, "gateway:use", "p99")["allowed"] is True


# -- the plan ----------------------------------------------------------------------------------


def test_a_scope_needs_a_paid_plan_after_the_permission_check() -> None:
    world = new_org("free")
    reply = world.run("create_api_key", user(world.owner_id), name="ci", permissions=["gateway:use"], projects=["p1"])
    assert error_of(reply) == ("plan_required", {"required_plan": "pro"})
    reply = world.run("change_role", user(world.owner_id), user_id=world.owner_id, role="owner", projects=["p1"])
    assert error_of(reply)[0] == "plan_required"
    denied = world.run("create_api_key", user("stranger"), name="ci", permissions=["gateway:use"], projects=["p1"])
    assert error_of(denied)[0] == "permission_denied"  # permission before plan
    assert world.create_key("unscoped", ["gateway:use"])  # without a scope the free plan is fine


# -- what a scope allows ------------------------------------------------------------------------


def test_a_scoped_key_reaches_only_its_projects_and_org_permissions_ignore_the_scope() -> None:
    world = full_org()
    key = world.create_key("ci", ["gateway:use", "projects:read", "api_keys:read"], projects=["web", "api"])
    for permission in ("gateway:use", "projects:read"):
        assert world.authorize_key(key, permission, "web")["allowed"] is True
        assert world.authorize_key(key, permission, "api")["allowed"] is True
        assert world.authorize_key(key, permission, "billing-svc")["allowed"] is False
        assert world.authorize_key(key, permission)["allowed"] is False  # no project named
    assert world.authorize_key(key, "api_keys:read")["allowed"] is True
    assert world.authorize_key(key, "api_keys:read", "elsewhere")["allowed"] is True
    answer = world.authorize_key(key, "gateway:use", "web")
    assert answer["projects"] == ["api", "web"]
    assert world.authorize_key(key, "projects:manage", "web")["allowed"] is False  # never held


def test_an_unscoped_principal_is_allowed_in_any_project_and_says_so() -> None:
    world = full_org()
    key = world.create_key("any", ["gateway:use"])
    for project_id in (None, "p1", "p2"):
        assert world.authorize_key(key, "gateway:use", project_id)["allowed"] is True
        assert world.authorize_user("dev1", "gateway:use", project_id)["allowed"] is True
    assert world.authorize_key(key, "gateway:use")["projects"] is None


def test_the_project_level_permissions_are_the_contracts() -> None:
    assert {"projects:read", "projects:use", "projects:manage", "gateway:use"} == PROJECT_PERMISSIONS


# -- members -------------------------------------------------------------------------------------


def test_an_invitation_sets_the_scope_the_member_gets_on_accepting() -> None:
    world = full_org()
    world.ok("add_seats", SYSTEM, quantity=2, accept_charge_cents=10**6)
    invitation = world.invite("carol@example.com", "developer", projects=["web"])
    accepted = world.accept(invitation, "carol")
    assert world.authorize_user("carol", "projects:use", "web")["allowed"] is True
    assert world.authorize_user("carol", "projects:use", "api")["allowed"] is False
    assert world.authorize_user("carol", "org:read")["allowed"] is True
    invited, joined = (
        e
        for e in world.recorded()
        if type(e).__name__ in ("MemberInvited", "InvitationAccepted") and e.email == "carol@example.com"
    )
    assert invited.projects == ["web"] and joined.projects == ["web"]
    assert world.events_of(accepted)[0].projects == ["web"]


def test_change_role_keeps_the_scope_unless_told_and_every_project_widens_it() -> None:
    world = full_org()
    world.ok("add_seats", SYSTEM, quantity=1, accept_charge_cents=10**6)
    scoped_member(world, "carol", "developer", ["web"])
    kept = world.run("change_role", user(world.owner_id), user_id="carol", role="admin")
    assert kept.result == {"user_id": "carol", "role": "admin", "projects": ["web"]}
    assert world.authorize_user("carol", "projects:manage", "web")["allowed"] is True
    assert world.authorize_user("carol", "projects:manage", "api")["allowed"] is False

    narrowed = world.run("change_role", user(world.owner_id), user_id="carol", role="admin", projects=["api"])
    event = world.events_of(narrowed)[0]
    assert (event.from_role, event.to_role, event.from_projects, event.projects) == ("admin", "admin", ["web"], ["api"])
    assert world.authorize_user("carol", "projects:use", "web")["allowed"] is False

    widened = world.run("change_role", user(world.owner_id), user_id="carol", role="admin", every_project=True)
    assert widened.result["projects"] is None
    assert world.authorize_user("carol", "projects:use", "anything")["allowed"] is True

    same = world.run("change_role", user(world.owner_id), user_id="carol", role="admin", every_project=True)
    assert same.ok and same.events == []


def test_a_scoped_assigner_grants_only_within_its_projects_and_never_every_project() -> None:
    world = full_org()
    world.ok("add_seats", SYSTEM, quantity=3, accept_charge_cents=10**6)
    scoped_member(world, "boss", "admin", ["web", "api"])
    boss = user("boss")
    assert world.ok("invite_member", boss, email="x@example.com", role="developer", projects=["web"])
    code, details = error_of(world.run("invite_member", boss, email="y@example.com", role="developer", projects=["web", "ml"]))
    assert (code, details["reason"], details["projects"]) == ("permission_denied", "projects_beyond_grantor", ["ml"])
    code, details = error_of(world.run("invite_member", boss, email="y@example.com", role="developer"))
    assert (code, details["projects"]) == ("permission_denied", None)  # every project is beyond a scoped admin
    assert error_of(world.run("change_role", boss, user_id="dev1", role="developer", projects=["ml"]))[0] == "permission_denied"
    # dev1 holds every project: a scoped admin may not even keep that scope while changing the role
    assert error_of(world.run("change_role", boss, user_id="dev1", role="admin"))[0] == "permission_denied"
    assert world.ok("change_role", boss, user_id="dev1", role="developer", projects=["api"])["projects"] == ["api"]
    assert (
        error_of(world.run("change_role", boss, user_id="dev1", role="developer", every_project=True))[0] == "permission_denied"
    )


def test_an_invitation_is_void_once_its_inviters_scope_no_longer_covers_it() -> None:
    world = full_org()
    world.ok("add_seats", SYSTEM, quantity=2, accept_charge_cents=10**6)
    scoped_member(world, "boss", "admin", ["web", "api"])
    invitation = world.ok("invite_member", user("boss"), email="z@example.com", role="developer", projects=["api"])
    world.ok("change_role", user(world.owner_id), user_id="boss", role="admin", projects=["web"])
    code, details = error_of(world.accept(invitation, "zed"))
    assert (code, details["reason"]) == ("expired", "inviter_lost_rights")


# -- keys: within the creator at creation, within the owner and creator always ------------------------------


def test_a_scoped_member_creates_keys_only_within_their_projects() -> None:
    world = full_org()
    world.ok("add_seats", SYSTEM, quantity=1, accept_charge_cents=10**6)
    scoped_member(world, "carol", "developer", ["web", "api"])
    carol = user("carol")
    reply = world.run("create_api_key", carol, name="all", permissions=["gateway:use"], owner_user_id="carol")
    assert error_of(reply) == ("permission_denied", {"reason": "projects_beyond_grantor", "projects": None})
    reply = world.run(
        "create_api_key", carol, name="ml", permissions=["gateway:use"], owner_user_id="carol", projects=["ml", "web"]
    )
    assert error_of(reply)[1]["projects"] == ["ml"]
    key = world.create_key("web", ["gateway:use"], by=carol, owner_user_id="carol", projects=["web"])
    assert world.authorize_key(key, "gateway:use", "web")["allowed"] is True
    assert world.authorize_key(key, "gateway:use", "api")["allowed"] is False


def test_a_key_follows_its_owners_current_scope_and_never_exceeds_it() -> None:
    world = full_org()
    key = world.create_key("dev1-ci", ["gateway:use"], owner_user_id="dev1", projects=["web", "api"])
    world.ok("change_role", user(world.owner_id), user_id="dev1", role="developer", projects=["web", "ml"])
    answer = world.authorize_key(key, "gateway:use", "web")
    assert (answer["allowed"], answer["projects"]) == (True, ["web"])  # the key's own, within the owner's
    assert world.authorize_key(key, "gateway:use", "api")["allowed"] is False
    assert world.authorize_key(key, "gateway:use", "ml")["allowed"] is False  # the owner's, not the key's
    world.ok("change_role", user(world.owner_id), user_id="dev1", role="developer", every_project=True)
    assert world.authorize_key(key, "gateway:use", "api")["projects"] == ["api", "web"]
    assert world.authorize_key(key, "gateway:use", "api")["allowed"] is True


def test_a_key_made_by_a_key_stays_within_its_creating_keys_scope() -> None:
    world = full_org()
    parent = world.create_key("parent", ["api_keys:manage", "gateway:use"], projects=["web"])
    child = world.create_key("child", ["gateway:use"], by={"type": "api_key", "id": parent}, projects=["web"])
    assert world.authorize_key(child, "gateway:use", "web")["allowed"] is True
    refused = world.run("create_api_key", {"type": "api_key", "id": parent}, name="wider", permissions=["gateway:use"])
    assert error_of(refused)[0] == "permission_denied"


def test_the_key_reply_and_event_carry_the_scope_and_the_audit_shows_it() -> None:
    world = full_org()
    reply = world.run("create_api_key", user(world.owner_id), name="ci", permissions=["gateway:use"], projects=["web", "api"])
    assert reply.result["projects"] == ["api", "web"]
    created = world.events_of(reply)[0]
    assert as_received(envelope_of(created)).data["projects"] == ["api", "web"]
    assert metadata_of(as_received(envelope_of(created)))["projects"] == ["api", "web"]

    changed = world.run("change_role", user(world.owner_id), user_id="dev1", role="admin", projects=["web"])
    metadata = metadata_of(as_received(envelope_of(world.events_of(changed)[0])))
    assert metadata["before"] == {"role": "developer", "projects": None}
    assert metadata["after"] == {"role": "admin", "projects": ["web"]}


def as_received(envelope: Envelope) -> Envelope:
    """As a consumer decodes it off the stream: the data a plain JSON object."""
    return decode_envelope(msgspec.json.encode(envelope))


# -- old events and snapshots -----------------------------------------------------------------


def test_events_recorded_before_scopes_decode_as_every_project() -> None:
    for name, data in (
        (
            "ApiKeyCreated",
            {"key_id": "k", "name": "n", "prefix": "p", "owner_user_id": None, "permissions": ["org:read"], "expires_at": None},
        ),
        ("RoleChanged", {"user_id": "u", "email": "u@example.com", "from_role": "developer", "to_role": "admin"}),
        ("InvitationAccepted", {"invitation_id": "i", "user_id": "u", "email": "u@example.com", "role": "developer"}),
    ):
        assert msgspec.convert(data, EVENT_DATA[name]).projects is None  # type: ignore[attr-defined]
    old_role_changed = {"email": "u@example.com", "user_id": "u", "from_role": "developer", "to_role": "admin"}
    envelope = Envelope(
        event_id="e",
        event_type="RoleChanged",
        schema_version=1,
        org_id="o",
        sequence=2,
        occurred_at=T0,
        actor=Actor(type="system", id="platform"),
        command_id="c",
        correlation_id=None,
        data=old_role_changed,
    )
    assert metadata_of(envelope)["before"] == {"role": "developer"}  # an old entry's hash stays as it was


def test_snapshot_values_from_before_scopes_read_as_every_project_and_scoped_ones_round_trip() -> None:
    by_type = {t.type: t for t in VALUE_TRANSCODINGS}
    member = Member("u", "u@example.com", "developer", T0, frozenset({"web"}))
    encoded = by_type[Member].encode(member)
    assert encoded["projects"] == ["web"] and by_type[Member].decode(encoded) == member
    old = {k: v for k, v in encoded.items() if k != "projects"}
    assert by_type[Member].decode(old).projects is None
    key = ApiKey("k", "n", "p", None, frozenset({"org:read"}), None, "h", T0, None, False, frozenset({"a", "b"}))
    assert by_type[ApiKey].decode(by_type[ApiKey].encode(key)) == key


def test_a_scoped_organization_rebuilt_from_its_snapshot_equals_the_live_one() -> None:
    world = full_org()
    scoped_member(world, "carol", "developer", ["web"])
    world.create_key("ci", ["gateway:use"], projects=["web"])
    org = world.app.organization(world.org_id)
    assert vars(Organization.Snapshot.take(org).mutate(None)) == vars(org)
