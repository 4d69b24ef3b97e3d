"""Who may run which command: every acting principal x every command case of the contract.

The expectation is computed from the contract's role table, written out again here, and
the contract's command table; nothing is taken from the domain's own permission code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from .builders import SYSTEM, World, api_key, full_org, new_org, user

# -- the contract's role table, written out -------------------------------------------

ALL_PERMISSIONS = frozenset(
    {
        "org:read", "org:manage", "billing:read", "billing:manage", "members:read", "members:invite",
        "members:manage", "owners:manage", "projects:read", "projects:use", "projects:manage",
        "api_keys:read", "api_keys:own", "api_keys:manage", "audit:read", "gateway:use",
    }
)  # fmt: skip
CONTRACT_ROLES: dict[str, frozenset[str]] = {
    "owner": ALL_PERMISSIONS,
    "admin": frozenset(
        {
            "org:read",
            "members:read",
            "members:invite",
            "members:manage",
            "projects:read",
            "projects:use",
            "projects:manage",
            "api_keys:read",
            "api_keys:own",
            "api_keys:manage",
            "audit:read",
            "gateway:use",
        }
    ),
    "developer": frozenset(
        {"org:read", "members:read", "projects:read", "projects:use", "api_keys:read", "api_keys:own", "gateway:use"}
    ),
}

# -- who acts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    name: str
    user_id: str | None  # a member or non-member user, or None for a service key
    permissions: frozenset[str]  # what the contract says it holds
    key_permissions: tuple[str, ...] = ()  # for a key: what it is created with
    key_owner: str | None = None  # for a member's key: whose it is (created for them by owner1)
    lifecycle: str = "live"  # or revoked, expired, orphaned (its owner removed), minted_by_revoked_key, kept (see below)

    def actor(self, world: World) -> dict[str, str]:
        if self.user_id is not None:
            return user(self.user_id)
        permissions = list(self.key_permissions)
        if self.lifecycle == "kept":  # minted by admin1, kept by the platform when admin1 left: it answers to the platform now
            key_id = world.create_key(f"key:{self.name}", permissions, by=user("admin1"))
            world.ok("remove_member", SYSTEM, user_id="admin1", keep_api_keys=[key_id])
            return api_key(key_id)
        if self.lifecycle == "minted_by_revoked_key":
            parent = world.create_key(f"parent:{self.name}", permissions)
            key_id = world.create_key(f"key:{self.name}", permissions, by=api_key(parent))
            world.ok("revoke_api_key", SYSTEM, key_id=parent)
            return api_key(key_id)
        expiry = {"expires_at": world.clock.now() + timedelta(hours=1)} if self.lifecycle == "expired" else {}
        key_id = world.create_key(f"key:{self.name}", permissions, owner_user_id=self.key_owner, **expiry)
        if self.lifecycle == "revoked":
            world.ok("revoke_api_key", SYSTEM, key_id=key_id)
        elif self.lifecycle == "expired":
            world.clock.advance(hours=2)
        elif self.lifecycle == "orphaned":
            world.ok("remove_member", SYSTEM, user_id=self.key_owner)
        return api_key(key_id)

    @property
    def is_member(self) -> bool:
        return self.user_id is not None and self.user_id != "stranger"


def _service_key(name: str, *permissions: str) -> Principal:
    return Principal(name, None, frozenset(permissions), tuple(permissions))


def _members_key(name: str, owner_user_id: str, owner_role: str, *permissions: str) -> Principal:
    """A key owned by a member: the contract caps it at its owner's role."""
    return Principal(name, None, frozenset(permissions) & CONTRACT_ROLES[owner_role], tuple(permissions), owner_user_id)


PRINCIPALS = [
    Principal("owner", "owner1", CONTRACT_ROLES["owner"]),
    Principal("admin", "admin1", CONTRACT_ROLES["admin"]),
    Principal("developer", "dev1", CONTRACT_ROLES["developer"]),
    Principal("non_member", "stranger", frozenset()),
    _service_key("key_readonly", "org:read", "members:read", "gateway:use"),
    _service_key("key_invite", "members:invite", "gateway:use"),
    _service_key("key_members", "members:invite", "members:manage", "gateway:use"),
    _service_key("key_owners", "members:invite", "members:manage", "owners:manage"),
    _service_key("key_billing", "billing:manage", "billing:read"),
    _service_key("key_api_keys", "api_keys:manage", "gateway:use"),
    _service_key("key_api_keys_own", "api_keys:own", "api_keys:read", "gateway:use"),
    _service_key("key_everything", *sorted(ALL_PERMISSIONS)),
    _members_key("admins_key_with_owner_rights", "admin1", "admin", *sorted(ALL_PERMISSIONS)),
    _members_key(
        "developers_key_with_manager_rights",
        "dev1",
        "developer",
        "members:invite",
        "members:manage",
        "api_keys:manage",
        "gateway:use",
    ),
    _members_key("owners_billing_key", "owner2", "owner", "billing:manage", "gateway:use"),
    _members_key("developers_gateway_key", "dev1", "developer", "gateway:use"),
    # keys that are not live act with nothing, whatever they were given
    Principal("revoked_key_everything", None, frozenset(), tuple(sorted(ALL_PERMISSIONS)), lifecycle="revoked"),
    Principal("expired_key_everything", None, frozenset(), tuple(sorted(ALL_PERMISSIONS)), lifecycle="expired"),
    Principal(
        "orphaned_admins_key",
        None,
        frozenset(),
        ("members:invite", "members:manage", "api_keys:manage", "gateway:use"),
        key_owner="admin1",
        lifecycle="orphaned",
    ),
    Principal(
        "key_minted_by_a_revoked_key", None, frozenset(), tuple(sorted(ALL_PERMISSIONS)), lifecycle="minted_by_revoked_key"
    ),
    Principal(
        "key_kept_when_its_creator_left",
        None,
        frozenset({"members:invite", "gateway:use"}),
        ("members:invite", "gateway:use"),
        lifecycle="kept",
    ),
]

# -- what is asked -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    command: str
    fields: Callable[[World, Principal], dict[str, Any]]
    # permissions the contract requires, given who acts
    needs: Callable[[Principal], frozenset[str] | None]  # None: not applicable to this principal
    # what the actor must hold besides: a new key's permissions, the role it gives, the role of the
    # member it acts on (a role is given, and a member changed or removed, only by whoever holds all
    # that role grants)
    must_also_hold: frozenset[str] = frozenset()


def needs(*permissions: str) -> Callable[[Principal], frozenset[str]]:
    return lambda _principal: frozenset(permissions)


def for_users_only(*permissions: str) -> Callable[[Principal], frozenset[str] | None]:
    return lambda principal: frozenset(permissions) if principal.user_id is not None else None


def pending_invitation(world: World, _p: Principal) -> dict[str, Any]:
    return {"invitation_id": world.invitations["pending@example.com"]["invitation_id"]}


CASES = [
    Case("change_plan", "change_plan", lambda w, p: {"plan": "enterprise"}, needs("billing:manage")),
    Case(
        "invite_developer",
        "invite_member",
        lambda w, p: {"email": "new@example.com", "role": "developer"},
        needs("members:invite"),
        CONTRACT_ROLES["developer"],
    ),
    Case(
        "invite_admin",
        "invite_member",
        lambda w, p: {"email": "new@example.com", "role": "admin"},
        needs("members:invite"),
        CONTRACT_ROLES["admin"],
    ),
    Case(
        "invite_owner",
        "invite_member",
        lambda w, p: {"email": "new@example.com", "role": "owner"},
        needs("members:invite", "owners:manage"),
        CONTRACT_ROLES["owner"],
    ),
    Case("resend_invitation", "resend_invitation", pending_invitation, needs("members:invite")),
    Case("revoke_invitation", "revoke_invitation", pending_invitation, needs("members:invite")),
    Case(
        "change_role_developer_to_admin",
        "change_role",
        lambda w, p: {"user_id": "dev2", "role": "admin"},
        needs("members:manage"),
        CONTRACT_ROLES["admin"] | CONTRACT_ROLES["developer"],
    ),
    Case(
        "change_role_developer_to_owner",
        "change_role",
        lambda w, p: {"user_id": "dev2", "role": "owner"},
        needs("members:manage", "owners:manage"),
        CONTRACT_ROLES["owner"],
    ),
    Case(
        "change_role_owner_to_admin",
        "change_role",
        lambda w, p: {"user_id": "owner2", "role": "admin"},
        needs("members:manage", "owners:manage"),
        CONTRACT_ROLES["owner"],
    ),
    Case(
        "remove_developer",
        "remove_member",
        lambda w, p: {"user_id": "dev2"},
        needs("members:manage"),
        CONTRACT_ROLES["developer"],
    ),
    Case(
        "remove_owner",
        "remove_member",
        lambda w, p: {"user_id": "owner2"},
        needs("members:manage", "owners:manage"),
        CONTRACT_ROLES["owner"],
    ),
    # "anyone may remove themself": only users have a self to remove
    Case("remove_self", "remove_member", lambda w, p: {"user_id": p.user_id}, for_users_only()),
    Case("add_seats", "add_seats", lambda w, p: {"quantity": 1, "accept_charge_cents": 100_000}, needs("billing:manage")),
    Case("remove_seats", "remove_seats", lambda w, p: {"quantity": 1}, needs("billing:manage")),
    Case(
        "create_service_key",
        "create_api_key",
        lambda w, p: {"name": "ci", "permissions": ["gateway:use"]},
        needs("api_keys:manage"),
        frozenset({"gateway:use"}),
    ),
    Case(
        "create_own_key",
        "create_api_key",
        lambda w, p: {"name": "mine", "permissions": ["gateway:use"], "owner_user_id": p.user_id},
        for_users_only("api_keys:own"),
        frozenset({"gateway:use"}),
    ),
    Case(
        "create_key_for_another_member",
        "create_api_key",
        lambda w, p: {"name": "theirs", "permissions": ["gateway:use"], "owner_user_id": "dev2"},
        needs("api_keys:manage"),
        frozenset({"gateway:use"}),
    ),
    # "api_keys:manage, or the key's owner"
    Case(
        "revoke_own_key",
        "revoke_api_key",
        lambda w, p: {"key_id": w.keys[f"own:{p.user_id}"]},
        lambda p: frozenset() if p.is_member else None,
    ),
    Case("revoke_another_members_key", "revoke_api_key", lambda w, p: {"key_id": w.keys["own:dev2"]}, needs("api_keys:manage")),
    # a key is not its owner: revoking the owner's other keys needs api_keys:manage in the key itself
    Case(
        "key_revokes_its_owners_other_key",
        "revoke_api_key",
        lambda w, p: {"key_id": w.keys[f"own:{p.key_owner}"]},
        lambda p: frozenset({"api_keys:manage"}) if p.key_owner is not None and p.lifecycle == "live" else None,
    ),
]


def expected_code(case: Case, principal: Principal) -> str | None:
    """None when the contract allows it (and the fixture makes it succeed), else the error code."""
    if case.name == "remove_self" and not principal.is_member:
        return "not_found"  # "anyone may remove themself", but a non-member is no member to remove
    required = case.needs(principal)
    assert required is not None
    allowed = required <= principal.permissions and case.must_also_hold <= principal.permissions
    return None if allowed else "permission_denied"


MATRIX = [
    pytest.param(principal, case, id=f"{principal.name}-{case.name}")
    for principal in PRINCIPALS
    for case in CASES
    if case.needs(principal) is not None and not (case.name == "revoke_own_key" and not principal.is_member)
]


def test_the_matrix_covers_every_command_except_create_and_accept() -> None:
    covered = {case.command for case in CASES}
    assert covered == {
        "change_plan", "invite_member", "resend_invitation", "revoke_invitation", "change_role",
        "remove_member", "add_seats", "remove_seats", "create_api_key", "revoke_api_key",
    }  # fmt: skip


@pytest.mark.parametrize("principal, case", MATRIX)
def test_a_command_is_allowed_exactly_when_the_contract_grants_the_actor_the_permission(principal: Principal, case: Case) -> None:
    # given an organization with members of every role, and the acting principal
    world = full_org()
    actor = principal.actor(world)
    fields = case.fields(world, principal)
    recorded_before = world.count_recorded()

    # when it runs the command
    reply = world.run(case.command, actor, **fields)

    # then it is allowed exactly when the contract says so
    expected = expected_code(case, principal)
    if expected is None:
        assert reply.ok, f"expected success, got {reply.error}"
        assert reply.events, "an allowed command in this fixture always records something"
        assert world.count_recorded() == recorded_before + len(reply.events)
    else:
        assert not reply.ok
        assert reply.error is not None and reply.error.code == expected, reply.error
        assert world.count_recorded() == recorded_before, "a refused command records nothing"


def test_a_permission_denial_names_the_missing_permission() -> None:
    world = full_org()

    reply = world.run("change_role", user("admin1"), user_id="dev2", role="owner")

    assert reply.error is not None and reply.error.code == "permission_denied"
    assert "owners:manage" in reply.error.details.get("missing", []) or "owners:manage" in reply.error.message


# -- create_organization and accept_invitation --------------------------------------


def test_only_the_platform_or_the_future_owner_may_create_an_organization() -> None:
    world = new_org("pro")
    body = {"name": "Other", "plan": "pro", "owner": {"user_id": "alice", "email": "alice@example.com"}}

    assert world.run("create_organization", user("mallory"), org_id="other1", **body).error.code == "permission_denied"
    assert world.run("create_organization", user("alice"), org_id="other2", **body).ok
    assert world.run("create_organization", SYSTEM, org_id="other3", **body).ok


def test_only_the_invited_user_may_accept_an_invitation() -> None:
    world = new_org("pro")
    invitation = world.invite("bob@example.com")
    token = world.token(invitation["invitation_id"], invitation["expires_at"])

    reply = world.run("accept_invitation", user("owner1"), invitation_id=invitation["invitation_id"], token=token, user_id="bob")

    assert reply.error is not None and reply.error.code == "permission_denied"
    assert world.accept(invitation, "bob").result == {"user_id": "bob", "role": "developer"}


# -- API keys never exceed their owner --------------------------------------------------


def test_a_key_cannot_be_created_with_a_permission_its_creator_lacks() -> None:
    world = full_org()

    by_admin = world.run("create_api_key", user("admin1"), name="x", permissions=["billing:manage"], owner_user_id="admin1")
    by_developer = world.run("create_api_key", user("dev1"), name="x", permissions=["members:invite"], owner_user_id="dev1")
    by_admin_for_service = world.run("create_api_key", user("admin1"), name="x", permissions=["members:invite", "owners:manage"])

    for reply in (by_admin, by_developer, by_admin_for_service):
        assert reply.error is not None and reply.error.code == "permission_denied"


def test_a_key_cannot_mint_a_key_with_more_than_its_own_permissions() -> None:
    world = full_org()
    minter = world.create_key("minter", ["api_keys:manage", "gateway:use"])

    wider = world.run("create_api_key", api_key(minter), name="wider", permissions=["gateway:use", "members:invite"])
    narrower = world.run("create_api_key", api_key(minter), name="narrower", permissions=["gateway:use"])

    assert wider.error is not None and wider.error.code == "permission_denied"
    assert narrower.ok


def test_a_key_acts_only_with_its_own_permissions_even_when_its_owner_has_more() -> None:
    world = full_org()
    key_id = world.create_key("owners-invite-only", ["members:invite"], by=user("owner1"), owner_user_id="owner1")

    assert world.authorize_key(key_id, "members:invite")["allowed"] is True
    assert world.authorize_key(key_id, "billing:manage")["allowed"] is False
    reply = world.run("add_seats", api_key(key_id), quantity=1, accept_charge_cents=100_000)
    assert reply.error is not None and reply.error.code == "permission_denied"


def test_demoting_the_owner_of_a_key_takes_the_lost_permissions_from_the_key() -> None:
    # given an owner's key with billing and member permissions
    world = full_org()
    key_id = world.create_key(
        "billing-bot", ["billing:manage", "members:invite", "gateway:use"], by=user("owner1"), owner_user_id="owner1"
    )
    assert world.authorize_key(key_id, "billing:manage")["allowed"] is True

    # when the key's owner is demoted to developer
    world.ok("change_role", user("owner2"), user_id="owner1", role="developer")

    # then the key keeps only what both it and its owner hold
    decision = world.authorize_key(key_id, "billing:manage")
    assert decision["allowed"] is False
    assert decision["permissions"] == ["gateway:use"]
    assert world.authorize_key(key_id, "members:invite")["allowed"] is False
    refused = world.run("add_seats", api_key(key_id), quantity=1, accept_charge_cents=100_000)
    assert refused.error is not None and refused.error.code == "permission_denied"
    refused = world.run("invite_member", api_key(key_id), email="x@example.com", role="developer")
    assert refused.error is not None and refused.error.code == "permission_denied"


def test_a_key_made_for_a_developer_by_an_admin_acts_only_within_the_developers_role() -> None:
    world = full_org()
    key_id = world.create_key("for-dev2", ["members:invite", "gateway:use"], by=user("admin1"), owner_user_id="dev2")

    assert world.authorize_key(key_id, "gateway:use")["allowed"] is True
    assert world.authorize_key(key_id, "members:invite")["allowed"] is False
    refused = world.run("invite_member", api_key(key_id), email="x@example.com", role="developer")
    assert refused.error is not None and refused.error.code == "permission_denied"


def test_removing_a_member_revokes_their_keys_and_authorize_then_refuses_them() -> None:
    world = full_org()
    key_id = world.create_key("dev-key", ["gateway:use"], by=user("dev1"), owner_user_id="dev1")
    assert world.authorize_key(key_id, "gateway:use")["allowed"] is True

    removal = world.run("remove_member", user("admin1"), user_id="dev1")

    assert removal.ok
    assert sorted(removal.result["revoked_api_keys"]) == sorted([key_id, world.keys["own:dev1"]])
    assert world.authorize_key(key_id, "gateway:use")["allowed"] is False
    assert world.authorize_user("dev1", "org:read")["allowed"] is False
    refused = world.run("create_api_key", api_key(key_id), name="x", permissions=["gateway:use"], owner_user_id="dev1")
    assert refused.error is not None and refused.error.code == "permission_denied"


def test_a_key_past_its_expiry_is_refused() -> None:
    world = full_org()
    key_id = world.create_key("short", ["gateway:use"], expires_at=world.clock.now().replace(hour=23))

    assert world.authorize_key(key_id, "gateway:use")["allowed"] is True
    world.clock.set(world.clock.now().replace(hour=23))
    assert world.authorize_key(key_id, "gateway:use")["allowed"] is False


def test_a_revoked_key_is_refused_and_cannot_act() -> None:
    world = full_org()
    key_id = world.create_key("ops", ["members:invite"])

    world.ok("revoke_api_key", user("admin1"), key_id=key_id)

    assert world.authorize_key(key_id, "members:invite")["allowed"] is False
    refused = world.run("invite_member", api_key(key_id), email="x@example.com", role="developer")
    assert refused.error is not None and refused.error.code == "permission_denied"


@pytest.mark.parametrize("role", ["owner", "admin", "developer"])
def test_authorize_reports_the_contract_permissions_of_each_role(role: str) -> None:
    world = full_org()
    member = {"owner": "owner2", "admin": "admin1", "developer": "dev1"}[role]

    for permission in sorted(ALL_PERMISSIONS):
        decision = world.authorize_user(member, permission)
        assert decision["allowed"] is (permission in CONTRACT_ROLES[role]), permission
    assert set(decision["permissions"]) == CONTRACT_ROLES[role]
    assert decision["role"] == role


def test_authorize_refuses_a_non_member() -> None:
    world = full_org()

    assert world.authorize_user("stranger", "org:read")["allowed"] is False


# -- custom roles (v1.3, enterprise) ---------------------------------------------------------

BILLING_VIEWER = frozenset({"billing:read", "org:read", "members:read"})
BILLING_MANAGER = frozenset({"billing:manage", "billing:read", "members:invite", "members:manage", "org:read", "gateway:use"})
CUSTOM_PRINCIPALS = [
    Principal("owner", "owner1", CONTRACT_ROLES["owner"]),
    Principal("admin", "admin1", CONTRACT_ROLES["admin"]),
    Principal("billing_viewer", "bv1", BILLING_VIEWER),
    Principal("billing_manager", "bm1", BILLING_MANAGER),
    Principal("billing_managers_key_with_owner_rights", None, BILLING_MANAGER, tuple(sorted(ALL_PERMISSIONS)), "bm1"),
    _service_key("key_org_manager", "org:manage", "org:read", "members:invite", "members:manage"),
]
CUSTOM_CASES = [
    *(case for case in CASES if case.name != "change_plan"),  # already enterprise: a no-op records nothing
    Case(
        "define_role",
        "define_role",
        lambda w, p: {"role_key": "auditor", "name": "Auditor", "permissions": ["org:read"]},
        needs("org:manage"),
        frozenset({"org:read"}),
    ),
    Case(
        "update_role",
        "update_role",
        lambda w, p: {"role_key": "unused", "permissions": ["org:read", "members:read"]},
        needs("org:manage"),
        frozenset({"org:read", "members:read"}),
    ),
    Case("delete_role", "delete_role", lambda w, p: {"role_key": "unused"}, needs("org:manage")),
    Case(
        "invite_billing_viewer",
        "invite_member",
        lambda w, p: {"email": "new@example.com", "role": "billing-viewer"},
        needs("members:invite"),
        BILLING_VIEWER,
    ),
    Case(
        "change_role_developer_to_billing_manager",
        "change_role",
        lambda w, p: {"user_id": "dev2", "role": "billing-manager"},
        needs("members:manage"),
        BILLING_MANAGER | CONTRACT_ROLES["developer"],
    ),
    Case(
        "change_role_billing_viewer_to_developer",
        "change_role",
        lambda w, p: {"user_id": "bv1", "role": "developer"},
        needs("members:manage"),
        CONTRACT_ROLES["developer"] | BILLING_VIEWER,
    ),
]


def enterprise_full_org() -> World:
    """`full_org`, on the enterprise plan, with two custom roles held (bv1: billing-viewer, bm1:
    billing-manager), one defined and unused, one free seat, and a key of their own for each."""
    world = full_org()
    world.ok("change_plan", SYSTEM, plan="enterprise")
    for role_key, permissions in (
        ("billing-viewer", BILLING_VIEWER),
        ("billing-manager", BILLING_MANAGER),
        ("unused", {"org:read"}),
    ):
        world.ok("define_role", SYSTEM, role_key=role_key, name=role_key, permissions=sorted(permissions))
    world.add_member("bv1", "billing-viewer")
    world.add_member("bm1", "billing-manager")
    if world.quote()["seats_available"] == 0:
        world.ok("add_seats", SYSTEM, quantity=1, accept_charge_cents=1_000_000)
    for member in ("bv1", "bm1"):
        world.create_key(f"own:{member}", ["api_keys:read"], owner_user_id=member)
    return world


CUSTOM_MATRIX = [
    pytest.param(principal, case, id=f"{principal.name}-{case.name}")
    for principal in CUSTOM_PRINCIPALS
    for case in CUSTOM_CASES
    if case.needs(principal) is not None and not (case.name == "revoke_own_key" and not principal.is_member)
]


@pytest.mark.parametrize("principal, case", CUSTOM_MATRIX)
def test_custom_roles_and_their_keys_are_allowed_exactly_what_the_contract_grants(principal: Principal, case: Case) -> None:
    world = enterprise_full_org()
    actor = principal.actor(world)
    fields = case.fields(world, principal)
    recorded_before = world.count_recorded()

    reply = world.run(case.command, actor, **fields)

    expected = expected_code(case, principal)
    if expected is None:
        assert reply.ok, f"expected success, got {reply.error}"
        assert reply.events
    else:
        assert reply.error is not None and reply.error.code == expected, reply.error
        assert world.count_recorded() == recorded_before


@pytest.mark.parametrize("member, held", [("bv1", BILLING_VIEWER), ("bm1", BILLING_MANAGER)])
def test_authorize_reports_a_custom_roles_permissions(member: str, held: frozenset[str]) -> None:
    world = enterprise_full_org()
    for permission in sorted(ALL_PERMISSIONS):
        assert world.authorize_user(member, permission)["allowed"] is (permission in held), permission


# -- scoped keys (v1.4) ------------------------------------------------------------------------------

PROJECT_LEVEL = frozenset({"projects:read", "projects:use", "projects:manage", "gateway:use"})
SCOPES: list[list[str] | None] = [None, ["web"], ["web", "api"]]
ASKED_IN = [None, "web", "api", "ml"]


def _expected_scope(key: list[str] | None, owner: list[str] | None) -> frozenset[str] | None:
    if key is None or owner is None:
        chosen = key if owner is None else owner
        return None if chosen is None else frozenset(chosen)
    return frozenset(key) & frozenset(owner)


@pytest.mark.parametrize("owner_role", ["admin", "developer"])
@pytest.mark.parametrize("owner_scope", SCOPES, ids=str)
@pytest.mark.parametrize("key_scope", SCOPES, ids=str)
def test_a_scoped_key_is_allowed_exactly_its_permissions_in_its_owners_and_its_own_projects(
    owner_role: str, owner_scope: list[str] | None, key_scope: list[str] | None
) -> None:
    world = full_org()
    member = "admin1" if owner_role == "admin" else "dev1"
    if owner_scope is not None:
        world.ok("change_role", SYSTEM, user_id=member, role=owner_role, projects=owner_scope)
    scope_field = {} if key_scope is None else {"projects": key_scope}
    key_id = world.create_key(
        "scoped", sorted(ALL_PERMISSIONS - {"owners:manage", "org:manage"}), owner_user_id=member, **scope_field
    )
    held = CONTRACT_ROLES[owner_role]
    effective = _expected_scope(key_scope, owner_scope)
    for permission in sorted(ALL_PERMISSIONS):
        for project_id in ASKED_IN:
            in_scope = permission not in PROJECT_LEVEL or effective is None or project_id in effective
            decision = world.authorize_key(key_id, permission, project_id)
            assert decision["allowed"] is (permission in held and in_scope), (permission, project_id)
            assert decision["projects"] == (None if effective is None else sorted(effective))


@pytest.mark.parametrize("creator_scope", SCOPES, ids=str)
@pytest.mark.parametrize("asked", [None, ["web"], ["api"], ["web", "ml"]], ids=str)
def test_a_key_is_created_only_within_its_creators_scope(creator_scope: list[str] | None, asked: list[str] | None) -> None:
    world = full_org()
    if creator_scope is not None:
        world.ok("change_role", SYSTEM, user_id="admin1", role="admin", projects=creator_scope)
    fields = {} if asked is None else {"projects": asked}
    reply = world.run("create_api_key", user("admin1"), name="k", permissions=["gateway:use"], **fields)
    within = creator_scope is None or (asked is not None and set(asked) <= set(creator_scope))
    if within:
        assert reply.ok, reply.error
    else:
        assert reply.error is not None and reply.error.code == "permission_denied", reply
        assert reply.error.details["reason"] == "projects_beyond_grantor"
