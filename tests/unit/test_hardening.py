"""Regressions from the hostile review (issue #9): each test is one reproduction, kept."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError

from services.membership import application
from services.membership.domain import events as ev
from services.membership.domain.organization import org_uuid
from services.membership.domain.permissions import permissions_of
from services.membership.secrets import Secrets
from shared.contract import commands as cmd
from shared.errors import InvalidToken, NotFound
from shared.requests import MAX_MESSAGE, reply_handler

from .builders import SERVER_SECRET, SYSTEM, T0, World, email_of, full_org, new_org, user, wire

OWNER = user("owner1")
STRANGER = user("mallory")


def code_of(reply) -> str | None:
    return reply.error.code if reply.error is not None else None


# -- 1. a replayed command_id leaks nothing ------------------------------------------


def test_a_stranger_replaying_a_key_creation_id_gets_a_conflict_and_no_secret() -> None:
    world = new_org("pro")
    created = world.run("create_api_key", OWNER, command_id="X", name="billing", permissions=["billing:manage"])
    assert created.ok

    replay = world.run("remove_member", STRANGER, command_id="X", user_id="owner1")

    assert (code_of(replay), replay.error.details) == ("conflict", {"reason": "command_id_reused"})
    assert created.result["secret"].encode() not in wire(replay)
    assert replay.result is None and replay.events is None


@pytest.mark.parametrize(
    "name, actor, fields",
    [
        ("create_api_key", user("admin1"), {"name": "ci", "permissions": ["gateway:use"]}),  # another actor
        ("create_api_key", OWNER, {"name": "ci-2", "permissions": ["gateway:use"]}),  # another body
        ("revoke_api_key", OWNER, {"key_id": "key_1"}),  # another command
    ],
    ids=["other-actor", "other-body", "other-command"],
)
def test_any_difference_in_a_repeat_is_a_conflict(name: str, actor: dict[str, str], fields: dict) -> None:
    world = full_org()
    first = world.run("create_api_key", OWNER, command_id="K", name="ci", permissions=["gateway:use"])
    recorded = world.count_recorded()

    reply = world.run(name, actor, command_id="K", **fields)

    assert (code_of(reply), reply.error.details["reason"]) == ("conflict", "command_id_reused")
    assert first.result["secret"].encode() not in wire(reply)
    assert world.count_recorded() == recorded


def test_the_same_command_id_in_another_org_is_a_reuse() -> None:
    world = new_org("pro", org_id="acme")
    world.ok(
        "create_organization",
        SYSTEM,
        org_id="globex",
        name="Globex",
        plan="pro",
        owner={"user_id": "g1", "email": "g1@example.com"},
    )
    first = world.run("invite_member", OWNER, command_id="same", email="a@example.com", role="developer")
    recorded = world.count_recorded()
    other = world.run("invite_member", OWNER, command_id="same", org_id="globex", email="a@example.com", role="developer")
    assert first.ok
    assert (code_of(other), other.error.details) == ("conflict", {"reason": "command_id_reused"})
    assert world.count_recorded() == recorded


def test_a_success_record_is_saved_with_its_events_or_not_at_all() -> None:
    world = new_org("pro")
    command = world.command("invite_member", OWNER, "atomic", email="a@example.com", role="developer")
    fingerprint = application.CommandFingerprint.of("invite_member", command)
    decision = world.app.decide(world.org_id, "invite_member", command, fingerprint)
    rival_command = world.command("invite_member", OWNER, "rival", email="b@example.com", role="developer")
    rival = world.app.decide(
        world.org_id, "invite_member", rival_command, application.CommandFingerprint.of("invite_member", rival_command)
    )
    world.app.record([rival])  # takes the version the first decision wanted

    with pytest.raises(IntegrityError):
        world.app.record([decision])

    assert world.app.commands.find_command("atomic", T0 - timedelta(days=1)) is None
    again = world.run("invite_member", OWNER, command_id="atomic", email="a@example.com", role="developer")
    assert again.ok and world.quote()["seats_used"] == 3


# -- 2. key secrets are random; the one reply with a secret is sealed -------------------


def test_key_secrets_are_random_and_not_derivable_from_the_server_secret() -> None:
    first = Secrets.issue_api_key("acme", "key_1")
    second = Secrets.issue_api_key("acme", "key_1")
    assert first.secret != second.secret
    assert len(first.secret.rsplit(".", 1)[1]) >= 43  # 256 bits, base64url


def test_the_stored_record_of_a_key_creation_holds_no_secret_in_clear() -> None:
    world = new_org("pro")
    created = world.ok("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])

    record = world.app.commands.find_command("key-1", T0 - timedelta(days=1))

    assert record is not None and record.sealed
    assert created["secret"].encode() not in record.reply
    assert created["secret"].split(".")[-1].encode() not in record.reply


def test_after_the_server_secret_rotates_a_repeat_cannot_replay_the_secret() -> None:
    world = new_org("pro")
    world.ok("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])
    world.app.secrets = Secrets("a-rotated-server-secret-of-at-least-32-characters")

    repeat = world.run("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])

    assert (code_of(repeat), repeat.error.details) == ("conflict", {"reason": "reply_unavailable"})
    assert len(world.app.organization(world.org_id).api_keys) == 1


def test_records_past_the_retention_window_are_erased_and_decided_afresh() -> None:
    world = new_org("pro")
    world.ok("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])
    world.clock.advance(hours=25)

    assert world.app.forget_commands(world.clock.now()) >= 1
    assert world.app.commands.find_command("key-1", T0 - timedelta(days=10)) is None
    again = world.run("create_api_key", OWNER, command_id="key-1", name="ci", permissions=["gateway:use"])
    assert again.ok and len(world.app.organization(world.org_id).api_keys) == 2


def test_the_organization_no_longer_grows_with_command_history() -> None:
    world = full_org()
    assert "commands" not in vars(world.app.organization(world.org_id))


# -- 4. text ------------------------------------------------------------------------


HOSTILE = ["k\u0000", "a\u0007b", "a\u007fb", "a\u0085b", "a\u2028b", "a\u2029b", "a\u202eb", "a\u2066b", "a\r\nb", "x" * 201]


@pytest.mark.parametrize("name", HOSTILE, ids=lambda n: repr(n[:8]))
def test_names_with_controls_separators_or_bidi_overrides_are_refused(name: str) -> None:
    world = new_org("pro")
    recorded = world.count_recorded()
    body = {"command_id": "c", "org_id": world.org_id, "actor": OWNER, "name": name, "permissions": ["gateway:use"]}
    reply = json.loads(world.loop.run(reply_handler(cmd.CreateApiKey, _run(world, "create_api_key"))(json.dumps(body).encode())))
    assert reply["error"]["code"] == "validation_error"
    assert world.count_recorded() == recorded


@pytest.mark.parametrize("name", ["Ünïcödé", "日本語のチーム", "team 🚀", "فريق", "e\u0301", "=?utf-8?q?Acme?="])
def test_ordinary_unicode_names_are_accepted(name: str) -> None:
    world = new_org("pro")
    assert world.run("create_api_key", OWNER, name=name, permissions=["gateway:use"]).ok


@pytest.mark.parametrize(
    "email",
    [
        "x,second@acme.io",
        "<x>@acme.io",
        "=?utf-8?q?a?=@acme.io",
        '"a b"@acme.io',
        "a@b@acme.io",
        "ü@acme.io",
        "a@acme.io\r\nBcc: b@acme.io",
        "a" * 250 + "@acme.io",
        "a" * 65 + "@example.com",  # RFC 5321: 64 octets before the @ at most; the notifier could not mail it
        "b" * 64 + "c@acme.io",
    ],
)
def test_addresses_outside_the_strict_grammar_are_refused(email: str) -> None:
    world = new_org("pro")
    recorded_before = world.count_recorded()
    body = {"command_id": "c", "org_id": world.org_id, "actor": OWNER, "email": email, "role": "developer"}
    reply = json.loads(world.loop.run(reply_handler(cmd.InviteMember, _run(world, "invite_member"))(json.dumps(body).encode())))
    assert reply["error"]["code"] == "validation_error"
    assert len(reply["error"]["message"]) <= MAX_MESSAGE
    assert world.count_recorded() == recorded_before


def test_an_international_domain_is_stored_in_its_ascii_form_lower_case() -> None:
    world = new_org("pro")
    world.invite("Ana@Bücher.DE")
    assert [i.email for i in world.app.view_organization(world.org_id).invitations] == ["ana@xn--bcher-kva.de"]


def test_invalid_utf8_and_overlong_ids_are_validation_errors() -> None:
    world = new_org("pro")
    handler = reply_handler(cmd.InviteMember, _run(world, "invite_member"))
    invalid_utf8 = b'{"command_id": "\xff\xfe", "org_id": "acme", "actor": {"type": "system", "id": "p"}, "email": "a@b.io", "role": "admin"}'
    overlong = json.dumps(
        {"command_id": "c" * 129, "org_id": "acme", "actor": SYSTEM, "email": "a@b.io", "role": "admin"}
    ).encode()
    for body in (invalid_utf8, overlong):
        assert json.loads(world.loop.run(handler(body)))["error"]["code"] == "validation_error"


# -- 5. error messages never echo unbounded input ------------------------------------


def test_a_huge_invalid_role_gets_a_short_message() -> None:
    world = new_org("pro")
    body = json.dumps({"command_id": "c", "org_id": world.org_id, "actor": OWNER, "email": "a@b.io", "role": "\u0085" * 300_000})
    reply = json.loads(world.loop.run(reply_handler(cmd.InviteMember, _run(world, "invite_member"))(body.encode())))
    assert reply["error"]["code"] == "validation_error"
    assert len(reply["error"]["message"]) <= MAX_MESSAGE


# -- 5. lists are paged ----------------------------------------------------------------


def test_get_organization_caps_its_lists_and_the_paged_queries_continue_them() -> None:
    world = new_org("pro")
    world.ok("add_seats", OWNER, quantity=150, accept_charge_cents=10**9)
    for n in range(140):
        world.invite(f"p{n}@example.com", by=OWNER)
        world.clock.advance(seconds=1)
    view = world.app.view_organization(world.org_id)
    assert len(view.invitations) == 100 and view.invitations_next_cursor is not None
    assert view.members_next_cursor is None

    seen, cursor = [], None
    while True:
        page = world.app.invitations(
            msgspec.convert({"org_id": world.org_id, "limit": 33, "cursor": cursor}, application.q.InvitationsQuery)
        )
        seen += [i.email for i in page.invitations]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"p{n}@example.com" for n in range(140)]


def test_invitations_filter_by_status_and_api_keys_list_without_secrets() -> None:
    world = full_org()
    world.ok("revoke_invitation", OWNER, invitation_id=world.invitations["pending@example.com"]["invitation_id"])
    query = application.q.InvitationsQuery
    revoked = world.app.invitations(msgspec.convert({"org_id": world.org_id, "status": "revoked"}, query))
    pending = world.app.invitations(msgspec.convert({"org_id": world.org_id, "status": "pending"}, query))
    assert [i.email for i in revoked.invitations] == ["pending@example.com"] and pending.invitations == []

    keys = world.app.api_keys(msgspec.convert({"org_id": world.org_id}, application.q.ApiKeysQuery))
    encoded = msgspec.json.encode(keys)
    assert len(keys.api_keys) == 5 and all(k.status == "live" for k in keys.api_keys)
    assert not any(secret.encode() in encoded for secret in world.key_secrets.values())
    assert b"secret_hash" not in encoded


# -- 6, 7. keys act only while live and within whoever granted them --------------------


def test_an_admins_keys_die_with_the_admins_membership() -> None:
    world = full_org()
    minted = world.create_key(
        "admins-backdoor", ["members:manage", "api_keys:manage", "members:invite"], by=user("admin1"), owner_user_id="owner1"
    )
    service = world.create_key("admins-service-key", ["members:invite", "api_keys:manage"], by=user("admin1"))
    grandchild = world.create_key("minted-by-the-service-key", ["members:invite"], by={"type": "api_key", "id": service})

    removed = world.ok("remove_member", OWNER, user_id="admin1")

    assert set(removed["revoked_api_keys"]) >= {minted, service, grandchild, world.keys["own:admin1"]}
    reinvite = world.run("invite_member", {"type": "api_key", "id": minted}, email=email_of("admin1"), role="admin")
    assert code_of(reinvite) == "permission_denied"


def test_a_key_kept_at_removal_lives_on_within_the_removers_rights() -> None:
    world = full_org()
    kept = world.create_key("ci", ["gateway:use", "members:invite"], by=user("admin1"))
    removed = world.ok("remove_member", OWNER, user_id="admin1", keep_api_keys=[kept])
    assert kept not in removed["revoked_api_keys"]
    assert world.authorize_key(kept, "members:invite")["allowed"] is True  # the owner vouches for it now

    world.add_member("admin1", "developer")  # its first creator comes back with less: nothing changes for the key
    assert world.authorize_key(kept, "members:invite")["allowed"] is True


def test_a_key_kept_by_an_admin_is_capped_by_the_admins_rights_and_dies_with_them() -> None:
    world = full_org()
    world.add_member("admin2", "admin")
    kept = world.create_key("ci", ["members:invite", "gateway:use"], by=user("admin1"))
    world.ok("remove_member", user("admin2"), user_id="admin1", keep_api_keys=[kept])
    assert world.authorize_key(kept, "members:invite")["allowed"] is True

    world.ok("change_role", OWNER, user_id="admin2", role="developer")
    assert world.authorize_key(kept, "members:invite")["allowed"] is False
    assert world.authorize_key(kept, "gateway:use")["allowed"] is True
    removed = world.ok("remove_member", OWNER, user_id="admin2")
    assert kept in removed["revoked_api_keys"]


def test_a_key_the_member_owns_cannot_be_kept() -> None:
    world = full_org()
    reply = world.run("remove_member", OWNER, user_id="dev1", keep_api_keys=[world.keys["own:dev1"]])
    assert (code_of(reply), reply.error.details) == ("conflict", {"owned": [world.keys["own:dev1"]]})
    assert world.role_of("dev1") == "developer"


def test_a_key_that_grants_nothing_now_is_listed_as_inactive() -> None:
    world = full_org()
    key = world.create_key("svc", ["members:invite"], by=user("admin1"))
    world.ok("change_role", OWNER, user_id="admin1", role="developer")
    listed = {k.key_id: k.status for k in world.app.api_keys(application.q.ApiKeysQuery(org_id=world.org_id)).api_keys}
    assert listed[key] == "inactive"
    assert listed[world.keys["own:admin1"]] == "live"


def test_an_organization_holds_a_bounded_number_of_unrevoked_keys(monkeypatch) -> None:
    from services.membership.domain import organization

    monkeypatch.setattr(organization, "MAX_UNREVOKED_KEYS", 3)
    world = new_org("pro")
    first = world.create_key("a", ["gateway:use"])
    world.create_key("b", ["gateway:use"])
    world.create_key("c", ["gateway:use"])
    refused = world.run("create_api_key", OWNER, name="d", permissions=["gateway:use"])
    assert (code_of(refused), refused.error.details) == ("conflict", {"reason": "key_limit_reached"})
    world.ok("revoke_api_key", OWNER, key_id=first)
    assert world.run("create_api_key", OWNER, name="d", permissions=["gateway:use"]).ok


@pytest.mark.parametrize(
    "field, value", [("org_id", "acme2\n"), ("command_id", "c1\n"), ("correlation_id", "corr\n"), ("name", "Acme\n")]
)
def test_a_trailing_newline_is_refused_in_every_id_and_text_field(field: str, value: str) -> None:
    world = new_org("pro")
    body = {
        "command_id": "c1",
        "org_id": "acme2",
        "actor": SYSTEM,
        "name": "Acme",
        "plan": "pro",
        "owner": {"user_id": "u1", "email": "u1@example.com"},
    }
    body[field] = value
    reply = json.loads(
        world.loop.run(reply_handler(cmd.CreateOrganization, _run(world, "create_organization"))(json.dumps(body).encode()))
    )
    assert reply["error"]["code"] == "validation_error", reply


def test_a_trailing_newline_is_refused_in_actor_and_user_ids() -> None:
    world = new_org("pro")
    body = {
        "command_id": "c2",
        "org_id": world.org_id,
        "actor": {"type": "user", "id": "owner1\n"},
        "user_id": "dev\n",
        "role": "admin",
    }
    reply = json.loads(world.loop.run(reply_handler(cmd.ChangeRole, _run(world, "change_role"))(json.dumps(body).encode())))
    assert reply["error"]["code"] == "validation_error"


def test_an_expiry_in_the_past_is_a_shape_error_before_any_permission_check() -> None:
    world = new_org("pro")
    command = world.command(
        "create_api_key", STRANGER, name="ci", permissions=["gateway:use"], expires_at=T0 - timedelta(seconds=1)
    )
    assert code_of(world.execute("create_api_key", command)) == "validation_error"


def test_revoking_an_invitation_on_the_free_plan_is_plan_required() -> None:
    world = new_org("free")
    assert code_of(world.run("revoke_invitation", OWNER, invitation_id="inv_ghost")) == "plan_required"


def test_keys_recorded_before_creators_were_are_removed_by_owner_alone() -> None:
    state = {
        "key_id": "k",
        "name": "n",
        "prefix": "p",
        "owner_user_id": None,
        "permissions": [],
        "expires_at": None,
        "secret_hash": "h",
    }
    ev.ApiKeyCreated.upcast_v1_v2(state)
    assert state["created_by"] is None


def test_demoting_a_keys_creator_narrows_the_key() -> None:
    world = full_org()
    key = world.create_key("svc", ["members:invite", "gateway:use"], by=user("admin1"))
    world.ok("change_role", OWNER, user_id="admin1", role="developer")
    assert world.authorize_key(key, "members:invite")["allowed"] is False
    assert world.authorize_key(key, "gateway:use")["allowed"] is True


# -- 8. one person, one seat ------------------------------------------------------------


def test_resending_a_lapsed_invitation_is_refused_when_another_is_pending_for_the_email() -> None:
    world = new_org("pro")
    first = world.invite("a@example.com", by=OWNER)
    world.clock.advance(days=8)
    world.invite("a@example.com", by=OWNER)

    reply = world.run("resend_invitation", OWNER, invitation_id=first["invitation_id"])

    assert code_of(reply) == "conflict"
    assert len(world.app.organization(world.org_id).pending_invitations(world.clock.now())) == 1


def test_resending_a_lapsed_invitation_is_refused_when_the_email_became_a_member() -> None:
    world = new_org("pro")
    first = world.invite("a@example.com", by=OWNER)
    world.clock.advance(days=8)
    second = world.invite("a@example.com", by=OWNER)
    assert world.accept(second, "a").ok

    assert code_of(world.run("resend_invitation", OWNER, invitation_id=first["invitation_id"])) == "conflict"


# -- 9. the first reply stands ------------------------------------------------------------


def test_a_no_op_repeated_after_a_real_change_records_nothing() -> None:
    world = full_org()
    world.ok("change_role", OWNER, command_id="X", user_id="dev1", role="developer")  # a no-op
    world.ok("change_role", OWNER, command_id="Y", user_id="dev1", role="admin")
    recorded = world.count_recorded()

    world.ok("change_role", OWNER, command_id="X", user_id="dev1", role="developer")

    assert world.count_recorded() == recorded and world.role_of("dev1") == "admin"


def test_a_refusal_stands_for_its_command_id() -> None:
    world = new_org("pro")
    world.invite("a@example.com", by=OWNER)
    world.invite("b@example.com", by=OWNER)
    refused = world.run("invite_member", OWNER, command_id="Y", email="c@example.com", role="developer")
    assert code_of(refused) == "seat_purchase_required"
    world.ok("add_seats", OWNER, quantity=1, accept_charge_cents=10_000)

    again = world.run("invite_member", OWNER, command_id="Y", email="c@example.com", role="developer")

    assert wire(again) == wire(refused)


def test_validation_errors_are_not_remembered() -> None:
    world = new_org("pro")
    command = world.command(
        "create_api_key", OWNER, "V", name="ci", permissions=["gateway:use"], expires_at=T0 - timedelta(days=1)
    )
    assert code_of(world.execute("create_api_key", command)) == "validation_error"
    assert world.run("create_api_key", OWNER, command_id="V", name="ci", permissions=["gateway:use"]).ok


# -- 10. snapshots hold only what was saved ---------------------------------------------


def test_a_failed_save_leaves_neither_the_cache_nor_the_snapshot_ahead_of_the_store(monkeypatch) -> None:
    monkeypatch.setattr(application, "SNAPSHOT_INTERVAL", 5)
    world = new_org("pro")
    world.ok("add_seats", OWNER, quantity=10, accept_charge_cents=10**9)
    for n in range(2):
        world.invite(f"p{n}@example.com", by=OWNER)  # version 4
    failing_ids = {"doomed"}

    async def save_unless_doomed(decision) -> None:
        if decision.record.command_id in failing_ids:
            raise RuntimeError("the database went away")
        await world.runner.save_directly(decision)

    world.runner._record = save_unless_doomed
    crossing = world.command("invite_member", OWNER, "crossing", email="p2@example.com", role="developer")  # version 5
    doomed = world.command("invite_member", OWNER, "doomed", email="p3@example.com", role="developer")  # would be 6

    async def both():
        return await asyncio.gather(
            world.runner.run("invite_member", crossing), world.runner.run("invite_member", doomed), return_exceptions=True
        )

    outcomes = world.loop.run(both())
    world.loop.run(world.runner.settled())

    assert outcomes[0].ok and isinstance(outcomes[1], RuntimeError)
    stored = world.count_recorded()
    assert world.app.organization(world.org_id).version == stored == 5
    snapshots = list(world.app.snapshots.get(org_uuid(world.org_id)))
    assert [s.originator_version for s in snapshots] == [5]
    world.app.evict(world.org_id)
    assert world.app.organization(world.org_id).version == 5


# -- 11. SCIM is enterprise-only ----------------------------------------------------------


SCIM_ON_PRO = [
    (
        "create_organization",
        {"org_id": "other", "name": "Other", "plan": "pro", "owner": {"user_id": "x1", "email": "x1@example.com"}},
        "permission_denied",
    ),
    ("change_plan", {"plan": "enterprise"}, "permission_denied"),
    ("invite_member", {"email": "n@example.com", "role": "developer"}, "plan_required"),
    ("resend_invitation", "pending", "plan_required"),
    ("revoke_invitation", "pending", "plan_required"),
    ("accept_invitation", "accept", "permission_denied"),
    ("change_role", {"user_id": "dev1", "role": "owner"}, "plan_required"),
    ("remove_member", {"user_id": "dev1"}, "plan_required"),
    ("add_seats", {"quantity": 1, "accept_charge_cents": 10_000}, "permission_denied"),
    ("remove_seats", {"quantity": 1}, "permission_denied"),
    ("create_api_key", {"name": "scim", "permissions": ["members:read"]}, "permission_denied"),
    ("revoke_api_key", "key", "permission_denied"),
]


@pytest.mark.parametrize("name, fields, on_pro", SCIM_ON_PRO, ids=[case[0] for case in SCIM_ON_PRO])
def test_scim_needs_the_enterprise_plan_for_every_command(name: str, fields, on_pro: str) -> None:
    """Permission first, then the plan: SCIM is refused on pro for every command, by one or the other."""
    world = full_org()
    pending = world.invitations["pending@example.com"]
    if fields == "pending":
        fields = {"invitation_id": pending["invitation_id"]}
    elif fields == "accept":
        token = world.token(pending["invitation_id"], pending["expires_at"])
        fields = {"invitation_id": pending["invitation_id"], "token": token, "user_id": "newcomer"}
    elif fields == "key":
        fields = {"key_id": world.keys["own:dev2"]}
    scim = {"type": "scim", "id": "okta"}

    refused = world.run(name, scim, **fields)
    assert code_of(refused) == on_pro
    if on_pro == "plan_required":
        assert refused.error.details.get("required_plan") == "enterprise"
        world.ok("change_plan", SYSTEM, plan="enterprise")
        on_enterprise = world.run(name, scim, **fields)
        assert on_enterprise.ok, on_enterprise.error


# -- 12. timestamps are UTC -----------------------------------------------------------------


def test_a_key_expiry_given_with_an_offset_is_recorded_and_answered_in_utc() -> None:
    world = new_org("pro")
    command = msgspec.json.decode(
        json.dumps(
            {
                "command_id": "k",
                "org_id": world.org_id,
                "actor": OWNER,
                "name": "ci",
                "permissions": ["gateway:use"],
                "expires_at": "2024-04-01T12:00:00+02:00",
            }
        ),
        type=cmd.CreateApiKey,
    )
    world.execute("create_api_key", command)
    (created,) = [e for e in world.recorded() if isinstance(e, ev.ApiKeyCreated)]
    assert msgspec.json.encode(created.expires_at) == b'"2024-04-01T10:00:00Z"'


# -- 15. smaller ones ---------------------------------------------------------------------


def test_creating_an_existing_org_as_someone_who_would_not_own_it_is_permission_denied() -> None:
    world = new_org("pro", org_id="acme")
    reply = world.run(
        "create_organization",
        STRANGER,
        org_id="acme",
        name="Acme",
        plan="pro",
        owner={"user_id": "owner1", "email": email_of("owner1")},
    )
    assert code_of(reply) == "permission_denied"


def test_a_duplicate_invitation_is_not_revealed_to_an_actor_without_the_permission() -> None:
    world = full_org()
    reply = world.run("invite_member", user("dev1"), email="pending@example.com", role="developer")
    assert code_of(reply) == "permission_denied"
    # with no seat free, the admin lacks billing:manage: that is decided before the duplicate is
    world.invite("fill@example.com", by=OWNER)
    assert (
        code_of(world.run("invite_member", user("admin1"), email="pending@example.com", role="developer")) == "permission_denied"
    )


def test_resending_a_revoked_invitation_is_expired() -> None:
    world = full_org()
    invitation_id = world.invitations["pending@example.com"]["invitation_id"]
    world.ok("revoke_invitation", OWNER, invitation_id=invitation_id)
    assert code_of(world.run("resend_invitation", OWNER, invitation_id=invitation_id)) == "expired"


def test_accepting_with_another_email_is_refused() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    token = world.token(invitation["invitation_id"], invitation["expires_at"])
    reply = world.run(
        "accept_invitation", user("a"), invitation_id=invitation["invitation_id"], token=token, user_id="a", email="b@example.com"
    )
    assert (code_of(reply), reply.error.details) == ("permission_denied", {"reason": "email_mismatch"})


# -- helpers ------------------------------------------------------------------------------


def _run(world: World, name: str):
    async def handle(command: cmd.Command):
        return await world.runner.run(name, command)

    return handle


def test_the_unit_server_secret_is_long_enough_for_production_rules() -> None:
    assert len(SERVER_SECRET) >= 32


# -- review: pages fit the bus whatever their items hold -----------------------------------


def test_a_page_of_keys_with_long_names_stops_at_its_byte_budget_and_continues() -> None:
    world = new_org("pro")
    names = [str(n) + "\U0001f600" * (200 - len(str(n))) for n in range(900)]
    for name in names:
        world.create_key(name, ["gateway:use"])
    query = application.q.ApiKeysQuery
    seen, cursor, pages = [], None, 0
    while True:
        page = world.app.api_keys(msgspec.convert({"org_id": world.org_id, "limit": 1000, "cursor": cursor}, query))
        assert len(msgspec.json.encode(page)) <= 600 * 1024
        seen += [k.name for k in page.api_keys]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(names) and pages >= 2  # each once (keys made in one instant come in id order)


# -- review: the invitation behind a link ------------------------------------------------------


def test_the_invitation_behind_a_link_is_shown_only_with_its_token() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    token = world.token(invitation["invitation_id"], invitation["expires_at"])
    org_id = world.app.org_of_invitation(invitation["invitation_id"])
    link = application.q.InvitationLinkQuery

    shown = world.app.invitation_behind_link(org_id, link(invitation_id=invitation["invitation_id"], token=token))
    assert (shown.org_id, shown.org_name, shown.email, shown.role, shown.status) == (
        "acme",
        "Acme",
        "a@example.com",
        "developer",
        "pending",
    )
    assert (shown.invited_by.type, shown.invited_by.id) == ("user", "owner1")
    with pytest.raises(InvalidToken):
        world.app.invitation_behind_link(org_id, link(invitation_id=invitation["invitation_id"], token="forged"))
    world.clock.advance(days=8)
    assert (
        world.app.invitation_behind_link(org_id, link(invitation_id=invitation["invitation_id"], token=token)).status == "expired"
    )
    with pytest.raises(NotFound):
        world.app.org_of_invitation("inv_unknown")


# -- second review: no grant outlives or exceeds whoever granted it --------------------------


def test_a_key_kept_by_scim_holds_no_more_than_scim() -> None:
    world = new_org("enterprise")
    world.add_member("admin1", "admin")
    svc = world.create_key("svc", ["api_keys:manage", "audit:read", "projects:manage", "members:invite"], by=user("admin1"))
    world.ok("remove_member", {"type": "scim", "id": "okta"}, user_id="admin1", keep_api_keys=[svc])
    for permission in ("api_keys:manage", "audit:read", "projects:manage"):
        assert world.authorize_key(svc, permission)["allowed"] is False, permission
    assert world.authorize_key(svc, "members:invite")["allowed"] is True


def test_removing_an_admin_revokes_the_invitations_they_sent() -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")
    invitation = world.invite("alt@evil.example", "admin", by=user("admin1"))
    removed = world.ok("remove_member", OWNER, user_id="admin1")
    assert removed["revoked_invitations"] == [invitation["invitation_id"]]
    reply = world.accept(invitation, "admin1-alt")
    assert code_of(reply) == "expired" and world.role_of("admin1-alt") is None


@pytest.mark.parametrize("how", ["demoted", "key revoked"])
def test_an_invitation_whose_sender_lost_the_right_cannot_be_accepted(how: str) -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")
    if how == "demoted":
        invitation = world.invite("alt@evil.example", "admin", by=user("admin1"))
        world.ok("change_role", OWNER, user_id="admin1", role="developer")
    else:
        key = world.create_key("inviter", sorted(permissions_of("admin")))  # what inviting an admin takes
        invitation = world.invite("alt@evil.example", "admin", by={"type": "api_key", "id": key})
        world.ok("revoke_api_key", OWNER, key_id=key)
    reply = world.accept(invitation, "alt")
    assert (code_of(reply), reply.error.details) == ("expired", {"reason": "inviter_lost_rights"})
    assert world.role_of("alt") is None


def test_whoever_leaves_cannot_keep_keys_behind() -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")
    svc = world.create_key("svc", ["members:invite"], by=user("admin1"))
    reply = world.run("remove_member", user("admin1"), user_id="admin1", keep_api_keys=[svc])
    assert code_of(reply) == "conflict" and world.role_of("admin1") == "admin"
    world.ok("remove_member", user("admin1"), user_id="admin1")
    world.add_member("admin1", "admin")
    assert world.authorize_key(svc, "members:invite")["allowed"] is False
