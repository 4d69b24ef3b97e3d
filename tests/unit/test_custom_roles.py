"""Custom roles (enterprise, contract v1.3): defined, updated and deleted by `org:manage`, assigned by
invitation or role change within the assigner's own permissions, resolved as currently defined."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.domain import Snapshot

from services.membership.domain.organization import Organization

from .builders import SYSTEM, World, api_key, new_org, user, wire
from .test_check_order import handle_over_the_wire

BILLING_VIEWER = ["billing:read", "org:read", "members:read"]


def enterprise_org() -> World:
    """An enterprise organization: owner1 (owner), admin1 (admin), dev1 (developer)."""
    world = new_org("enterprise")
    world.add_member("admin1", "admin")
    world.add_member("dev1", "developer")
    world.ok("add_seats", SYSTEM, quantity=5, accept_charge_cents=10**9)
    return world


def define(
    world: World, role_key: str = "billing-viewer", permissions: list[str] | None = None, by: dict[str, str] | None = None
) -> Any:
    return world.run(
        "define_role",
        by or user("owner1"),
        role_key=role_key,
        name=role_key.replace("-", " ").title(),
        description="reads the bills",
        permissions=BILLING_VIEWER if permissions is None else permissions,
    )


def error_of(reply: Any) -> tuple[str, dict[str, Any]]:
    assert reply.error is not None, reply
    return reply.error.code, reply.error.details


# -- defining --------------------------------------------------------------------------


def test_an_owner_defines_a_role_and_the_event_carries_it() -> None:
    world = enterprise_org()

    reply = define(world)

    assert reply.ok, reply.error
    (event,) = world.events_of(reply)
    assert type(event).__name__ == "RoleDefined"
    assert (event.role_key, event.permissions) == ("billing-viewer", sorted(BILLING_VIEWER))


@pytest.mark.parametrize(
    ("role_key", "permissions"),
    [
        ("owner", BILLING_VIEWER),
        ("admin", BILLING_VIEWER),
        ("developer", BILLING_VIEWER),
        ("Billing", BILLING_VIEWER),
        ("-billing", BILLING_VIEWER),
        ("b" * 64, BILLING_VIEWER),
        ("billing\n", BILLING_VIEWER),
        ("maker", ["owners:manage"]),
        ("definer", ["org:read", "org:manage"]),
        ("nonsense", ["teleport:use"]),
    ],
)
def test_a_bad_role_key_or_a_reserved_permission_is_a_validation_error(role_key: str, permissions: list[str]) -> None:
    world = enterprise_org()
    before = world.count_recorded()
    body = {"command_id": "c1", "org_id": world.org_id, "actor": user("owner1"), "role_key": role_key, "name": "R"}

    outcome = handle_over_the_wire(world, "define_role", {**body, "permissions": permissions})

    assert outcome["reply"]["error"]["code"] == "validation_error"
    assert not outcome["reached_application"]
    assert world.count_recorded() == before


def test_a_key_of_63_characters_is_fine() -> None:
    assert define(enterprise_org(), "b" * 63).ok


def test_defining_needs_org_manage_then_the_enterprise_plan() -> None:
    world = enterprise_org()
    assert error_of(define(world, by=user("admin1")))[0] == "permission_denied"
    pro = new_org("pro")
    code, details = error_of(define(pro))
    assert code == "plan_required" and details["required_plan"] == "enterprise"
    assert error_of(define(new_org("pro"), by=user("stranger")))[0] == "permission_denied"


def test_a_role_key_is_unique() -> None:
    world = enterprise_org()
    assert define(world).ok
    assert error_of(define(world))[0] == "conflict"


def test_a_role_never_holds_more_than_its_definer() -> None:
    world = enterprise_org()
    key_id = world.create_key("org-manager", ["org:manage", "org:read"])

    code, details = error_of(define(world, permissions=["org:read", "billing:read"], by=api_key(key_id)))

    assert code == "permission_denied" and details["missing"] == ["billing:read"]
    assert define(world, permissions=["org:read"], by=api_key(key_id)).ok


# -- updating and deleting -----------------------------------------------------------------


def test_update_keeps_what_is_absent_and_records_the_previous_definition() -> None:
    world = enterprise_org()
    define(world)

    reply = world.run("update_role", user("owner1"), role_key="billing-viewer", permissions=["billing:read"])

    assert reply.ok, reply.error
    (event,) = world.events_of(reply)
    assert type(event).__name__ == "RoleUpdated"
    assert (event.name, event.description, event.permissions) == ("Billing Viewer", "reads the bills", ["billing:read"])
    assert event.previous == {"name": "Billing Viewer", "description": "reads the bills", "permissions": sorted(BILLING_VIEWER)}


def test_an_update_that_changes_nothing_records_nothing() -> None:
    world = enterprise_org()
    define(world)

    reply = world.run("update_role", user("owner1"), role_key="billing-viewer", name="Billing Viewer")

    assert reply.ok and reply.events == []


def test_updating_or_deleting_an_undefined_role_is_not_found() -> None:
    world = enterprise_org()
    assert error_of(world.run("update_role", user("owner1"), role_key="ghost", name="Ghost"))[0] == "not_found"
    assert error_of(world.run("delete_role", user("owner1"), role_key="ghost"))[0] == "not_found"
    body = {"command_id": "c1", "org_id": world.org_id, "actor": user("owner1"), "role_key": "admin"}
    assert handle_over_the_wire(world, "delete_role", body)["reply"]["error"]["code"] == "validation_error"


def test_a_held_role_cannot_be_deleted_and_the_conflict_lists_its_holders() -> None:
    world = enterprise_org()
    define(world)
    world.add_member("bob", "billing-viewer")
    invitation = world.invite("carol@example.com", "billing-viewer", accept_charge_cents=1_000_000)

    code, details = error_of(world.run("delete_role", user("owner1"), role_key="billing-viewer"))

    assert code == "conflict"
    assert details == {"roles": ["billing-viewer"], "members": ["bob"], "invitations": [invitation["invitation_id"]]}
    world.ok("change_role", user("owner1"), user_id="bob", role="developer")
    world.ok("revoke_invitation", user("owner1"), invitation_id=invitation["invitation_id"])
    reply = world.run("delete_role", user("owner1"), role_key="billing-viewer")
    assert reply.ok, reply.error
    (event,) = world.events_of(reply)
    assert (type(event).__name__, event.previous["permissions"]) == ("RoleDeleted", sorted(BILLING_VIEWER))
    assert error_of(world.run("change_role", user("owner1"), user_id="bob", role="billing-viewer")) == (
        "validation_error",
        {"field": "role"},
    )


# -- assigning -----------------------------------------------------------------------------


def test_a_member_with_a_custom_role_holds_its_permissions_and_is_never_an_owner() -> None:
    world = enterprise_org()
    define(world)
    world.add_member("bob", "billing-viewer")

    for permission in ("billing:read", "org:read", "members:read"):
        assert world.authorize_user("bob", permission)["allowed"] is True
    for permission in ("billing:manage", "gateway:use", "owners:manage"):
        assert world.authorize_user("bob", permission)["allowed"] is False
    assert world.authorize_user("bob", "org:read")["role"] == "billing-viewer"
    assert world.run("remove_member", user("owner1"), user_id="owner1").error.code == "last_owner"  # type: ignore[union-attr]


def test_an_undefined_key_is_a_validation_error_on_role_decided_after_permission_and_plan() -> None:
    world = enterprise_org()
    assert error_of(world.run("invite_member", user("dev1"), email="x@example.com", role="ghost"))[0] == "permission_denied"
    assert error_of(world.run("invite_member", user("owner1"), email="x@example.com", role="ghost")) == (
        "validation_error",
        {"field": "role"},
    )
    assert error_of(world.run("change_role", user("owner1"), user_id="dev1", role="ghost")) == (
        "validation_error",
        {"field": "role"},
    )
    assert error_of(world.run("change_role", user("dev1"), user_id="dev1", role="ghost"))[0] == "permission_denied"
    pro = new_org("pro")
    pro.add_member("dev1", "developer")
    assert error_of(pro.run("invite_member", user("owner1"), email="x@example.com", role="ghost"))[0] == "plan_required"
    assert error_of(pro.run("change_role", user("owner1"), user_id="dev1", role="ghost"))[0] == "plan_required"


def test_a_role_is_assigned_only_within_the_assigners_own_permissions() -> None:
    world = enterprise_org()
    define(world, "billing-manager", ["billing:manage", "billing:read"])
    define(world, "reader", ["org:read", "members:read"])

    code, details = error_of(world.run("invite_member", user("admin1"), email="x@example.com", role="billing-manager"))
    assert code == "permission_denied" and details["missing"] == ["billing:manage", "billing:read"]
    code, _ = error_of(world.run("change_role", user("admin1"), user_id="dev1", role="billing-manager"))
    assert code == "permission_denied"

    assert world.run("invite_member", user("admin1"), email="x@example.com", role="reader").ok
    assert world.run("change_role", user("admin1"), user_id="dev1", role="reader").ok
    assert world.run("change_role", user("owner1"), user_id="dev1", role="billing-manager").ok


def test_an_invitation_to_a_custom_role_is_void_once_its_inviter_lacks_the_roles_permissions() -> None:
    world = enterprise_org()
    define(world, "reader", ["org:read", "audit:read"])
    invitation = world.ok("invite_member", user("admin1"), email="x@example.com", role="reader", accept_charge_cents=1_000_000)
    world.ok("change_role", user("owner1"), user_id="admin1", role="developer")

    reply = world.accept(invitation, "xavier")

    assert error_of(reply) == ("expired", {"reason": "inviter_lost_rights"})


def test_updating_a_role_changes_its_holders_and_their_keys_at_once() -> None:
    world = enterprise_org()
    define(world, "billing-manager", ["billing:manage", "billing:read", "api_keys:own", "gateway:use"])
    world.add_member("bob", "billing-manager")
    key_id = world.create_key("bobs", ["billing:manage", "gateway:use"], by=user("bob"), owner_user_id="bob")
    assert world.authorize_key(key_id, "billing:manage")["allowed"] is True

    world.ok(
        "update_role", user("owner1"), role_key="billing-manager", permissions=["billing:read", "api_keys:own", "gateway:use"]
    )

    assert world.authorize_user("bob", "billing:manage")["allowed"] is False
    assert world.authorize_key(key_id, "billing:manage")["allowed"] is False  # a key never outranks its owner
    assert world.authorize_key(key_id, "gateway:use")["allowed"] is True
    assert world.run("add_seats", api_key(key_id), quantity=1, accept_charge_cents=10**6).error.code == "permission_denied"  # type: ignore[union-attr]


def test_leaving_enterprise_while_custom_roles_are_assigned_is_a_conflict_listing_them() -> None:
    world = enterprise_org()
    define(world)
    define(world, "unused", ["org:read"])
    world.add_member("bob", "billing-viewer")

    code, details = error_of(world.run("change_plan", user("owner1"), plan="pro"))

    assert code == "conflict"
    assert details == {"roles": ["billing-viewer"], "members": ["bob"], "invitations": []}
    world.ok("change_role", user("owner1"), user_id="bob", role="developer")
    assert world.run("change_plan", user("owner1"), plan="pro").ok


def test_a_custom_role_reaches_a_snapshot_and_a_v3_snapshot_upcasts_without_roles() -> None:
    world = enterprise_org()
    define(world)
    world.add_member("bob", "billing-viewer")
    org = world.app.organization(world.org_id)

    taken = Organization.Snapshot.take(org)
    rebuilt = taken.mutate(None)
    assert vars(rebuilt) == vars(org)

    old_state = {k: v for k, v in taken.state.items() if k != "roles"} | {"class_version": 3}
    old = Snapshot(
        originator_id=taken.originator_id,
        originator_version=taken.originator_version,
        timestamp=taken.timestamp,
        topic=taken.topic,
        state=old_state,
    )
    assert old.mutate(None).roles == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "body", "other_body"),
    [
        (
            "define_role",
            {"role_key": "r2", "name": "R2", "permissions": ["org:read"]},
            {"role_key": "r3", "name": "R3", "permissions": ["org:read"]},
        ),
        ("update_role", {"role_key": "r1", "permissions": ["members:read"]}, {"role_key": "r1", "name": "Renamed"}),
        ("delete_role", {"role_key": "r1"}, {"role_key": "r2"}),
    ],
)
def test_role_commands_are_idempotent_by_command_id(name: str, body: dict[str, Any], other_body: dict[str, Any]) -> None:
    world = enterprise_org()
    world.ok("define_role", user("owner1"), role_key="r1", name="R1", permissions=["org:read"])
    world.ok("define_role", user("owner1"), role_key="r2", name="R2", permissions=["org:read"])
    world.ok("delete_role", user("owner1"), role_key="r2")
    before = world.count_recorded()

    first = world.run(name, user("owner1"), "role-cmd-1", **body)
    assert first.ok and len(first.events or []) == 1, first
    recorded = world.count_recorded()
    assert recorded == before + 1
    roles = world.app.organization(world.org_id).roles

    again = world.run(name, user("owner1"), "role-cmd-1", **body)
    assert wire(again) == wire(first)  # the first reply, byte for byte
    assert world.count_recorded() == recorded

    reused = world.run(name, user("owner1"), "role-cmd-1", **other_body)
    assert reused.error is not None, reused
    assert (reused.error.code, reused.error.details) == ("conflict", {"reason": "command_id_reused"})
    assert reused.result is None and reused.events is None
    assert world.count_recorded() == recorded
    assert world.app.organization(world.org_id).roles == roles


# -- no escalation through a role that manages members (review of v1.3) --------------------

PEOPLE_OPS = ["members:invite", "members:manage", "members:read", "org:read"]


def with_people_ops(world: World) -> str:
    assert define(world, "people-ops", PEOPLE_OPS).ok
    world.add_member("pops", "people-ops")
    return "pops"


def test_a_role_that_manages_members_cannot_promote_its_holder_or_anyone_to_admin() -> None:
    world = enterprise_org()
    pops = with_people_ops(world)
    recorded = world.count_recorded()

    for user_id in (pops, "dev1"):
        reply = world.run("change_role", user(pops), user_id=user_id, role="admin")
        code, details = error_of(reply)
        assert (code, details["reason"]) == ("permission_denied", "role_beyond_assigner")
        assert "api_keys:manage" in details["missing"]
    assert world.count_recorded() == recorded
    assert (
        world.role_of(pops) == "people-ops"
        and world.index.authorize_user(world.org_id, pops, "api_keys:manage")["allowed"] is False
    )


def test_a_role_that_may_invite_cannot_invite_an_admin_and_an_old_such_invitation_cannot_be_accepted() -> None:
    world = enterprise_org()
    pops = with_people_ops(world)

    code, details = error_of(world.run("invite_member", user(pops), email="friend@example.com", role="admin"))
    assert (code, details["reason"]) == ("permission_denied", "role_beyond_assigner")

    # an invitation it could send (to its own role), then the role grows beyond the inviter's reach
    sent = world.invite("peer@example.com", "people-ops", by=user(pops))
    assert world.ok("update_role", user("owner1"), role_key="people-ops", permissions=[*PEOPLE_OPS, "audit:read"])
    world.ok("change_role", user("owner1"), user_id=pops, role="developer")
    reply = world.accept(sent, "peer")
    assert error_of(reply) == ("expired", {"reason": "inviter_lost_rights"})


def test_a_role_that_manages_members_cannot_demote_or_remove_an_admin_but_may_a_developer() -> None:
    world = enterprise_org()
    pops = with_people_ops(world)

    for name, fields in (("change_role", {"user_id": "admin1", "role": "people-ops"}), ("remove_member", {"user_id": "admin1"})):
        code, details = error_of(world.run(name, user(pops), **fields))
        assert (code, details["reason"]) == ("permission_denied", "member_beyond_actor"), name
    assert world.role_of("admin1") == "admin"

    # a developer's rights are not within people-ops' either (gateway:use, ...): refused too
    assert error_of(world.run("remove_member", user(pops), user_id="dev1"))[1]["reason"] == "member_beyond_actor"
    # an admin holds everything a developer does: allowed
    assert world.run("remove_member", user("admin1"), user_id="dev1").ok


def test_scim_provisions_any_role_as_the_identity_provider_says() -> None:
    world = enterprise_org()
    scim = {"type": "scim", "id": "okta"}

    assert world.run("change_role", scim, user_id="dev1", role="admin").ok
    assert world.run("remove_member", scim, user_id="admin1").ok


def test_a_scope_refusal_comes_before_the_roles_plan_and_definition() -> None:
    """Check order: permission (the scope beyond the grantor's), then plan, then the role's definition."""
    world = enterprise_org()
    world.ok("change_role", user("owner1"), user_id="admin1", role="admin", projects=["web"])

    reply = world.run("invite_member", user("admin1"), email="x@example.com", role="no-such-role")
    assert error_of(reply)[1].get("reason") == "projects_beyond_grantor"

    world.ok("change_plan", SYSTEM, plan="pro")
    reply = world.run("invite_member", user("admin1"), email="x@example.com", role="no-such-role")
    assert error_of(reply)[1].get("reason") == "projects_beyond_grantor"


def test_a_role_left_behind_by_a_downgrade_can_still_be_deleted_but_not_changed() -> None:
    world = enterprise_org()
    assert define(world, "leftover", ["org:read"]).ok
    world.ok("change_plan", SYSTEM, plan="pro")

    assert error_of(world.run("update_role", user("owner1"), role_key="leftover", name="x"))[0] == "plan_required"
    assert world.run("delete_role", user("owner1"), role_key="leftover").ok
    assert error_of(world.run("delete_role", user("owner1"), role_key="leftover"))[0] == "not_found"
