"""Seats, invitations, expiry, last-owner protection and seat purchases, with a controlled clock.

The org is created at T0 = 2024-03-10 09:30 UTC, so its first billing period is the 31 days
Mar 10 -> Apr 10; charges below are worked out by hand from the contract's formula.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta

import pytest

from services.membership.domain.permissions import permissions_of

from .builders import SYSTEM, T0, api_key, email_of, full_org, new_org, user

OWNER = user("owner1")
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
MICROSECOND = timedelta(microseconds=1)

# 16 days before the end of the 31-day period: 1000 * 16 / 31 = 516.13 -> 516 cents
SIXTEEN_DAYS_LEFT = T0 + 15 * DAY
CHARGE_WITH_SIXTEEN_DAYS_LEFT = 516


def filled_pro_org(invited_at=T0):
    """A pro org whose three included seats are taken: the owner and two pending invitations."""
    world = new_org("pro")
    world.clock.set(invited_at)
    world.invite("a@example.com", by=OWNER)
    world.invite("b@example.com", by=OWNER)
    assert world.quote()["seats_available"] == 0
    return world


# -- seat arithmetic ----------------------------------------------------------------------


def test_a_pro_org_includes_three_seats_and_its_owner_uses_one() -> None:
    quote = new_org("pro").quote()

    assert (quote["seats_included"], quote["seats_purchased"], quote["seats_total"]) == (3, 0, 3)
    assert (quote["seats_used"], quote["seats_available"]) == (1, 2)
    assert quote["unit_price_cents"] == 1000


def test_pending_invitations_use_seats_and_never_exceed_the_total() -> None:
    world = new_org("pro")

    replies = [world.run("invite_member", OWNER, email=f"person{i}@example.com", role="developer") for i in range(5)]

    assert [r.ok for r in replies] == [True, True, False, False, False]
    assert {r.error.code for r in replies[2:]} == {"seat_purchase_required"}
    quote = world.quote()
    assert (quote["seats_used"], quote["seats_total"], quote["seats_available"]) == (3, 3, 0)


def test_an_invitation_without_a_free_seat_needs_a_purchase_and_is_given_a_quote() -> None:
    # given a pro org with its 3 seats taken, 16 days before the period ends
    world = filled_pro_org(invited_at=SIXTEEN_DAYS_LEFT)
    before = world.count_recorded()

    # when the owner invites without accepting a charge
    reply = world.run("invite_member", OWNER, email="c@example.com", role="developer")

    # then the reply is a seat quote and nothing is recorded
    assert reply.error is not None and reply.error.code == "seat_purchase_required"
    details = reply.error.details
    assert details["next_seat_charge_cents"] == CHARGE_WITH_SIXTEEN_DAYS_LEFT
    assert (details["seats_total"], details["seats_used"], details["seats_available"]) == (3, 3, 0)
    assert (details["billing_period_start"], details["billing_period_end"]) == (T0, T0.replace(month=4))
    assert details["quoted_at"] == SIXTEEN_DAYS_LEFT
    assert world.count_recorded() == before


def test_accepting_the_charge_buys_a_seat_and_invites_in_one_command() -> None:
    world = filled_pro_org(invited_at=SIXTEEN_DAYS_LEFT)

    reply = world.run(
        "invite_member", OWNER, email="c@example.com", role="developer", accept_charge_cents=CHARGE_WITH_SIXTEEN_DAYS_LEFT
    )

    assert reply.ok, reply.error
    assert len(reply.events) == 2 and len(set(reply.events)) == 2
    seat_added, invited = world.events_of(reply)
    assert (type(seat_added).__name__, type(invited).__name__) == ("SeatAdded", "MemberInvited")
    assert (seat_added.quantity, seat_added.seats_total, seat_added.charge_cents) == (1, 4, CHARGE_WITH_SIXTEEN_DAYS_LEFT)
    assert (seat_added.billing_period_start, seat_added.billing_period_end) == (T0, T0.replace(month=4))
    assert invited.invitation_id == reply.result["invitation_id"]
    assert reply.result["seat_charge_cents"] == CHARGE_WITH_SIXTEEN_DAYS_LEFT
    quote = world.quote()
    assert (quote["seats_purchased"], quote["seats_total"], quote["seats_used"]) == (1, 4, 4)


def test_the_charge_is_the_amount_due_not_the_most_the_caller_accepted() -> None:
    world = filled_pro_org(invited_at=SIXTEEN_DAYS_LEFT)

    reply = world.run("invite_member", OWNER, email="c@example.com", role="developer", accept_charge_cents=50_000)

    assert reply.result["seat_charge_cents"] == CHARGE_WITH_SIXTEEN_DAYS_LEFT
    assert world.events_of(reply)[0].charge_cents == CHARGE_WITH_SIXTEEN_DAYS_LEFT


def test_accepting_less_than_the_charge_due_is_a_charge_mismatch_with_a_fresh_quote() -> None:
    world = filled_pro_org(invited_at=SIXTEEN_DAYS_LEFT)
    before = world.count_recorded()

    reply = world.run(
        "invite_member", OWNER, email="c@example.com", role="developer", accept_charge_cents=CHARGE_WITH_SIXTEEN_DAYS_LEFT - 1
    )

    assert reply.error is not None and reply.error.code == "charge_mismatch"
    assert reply.error.details["next_seat_charge_cents"] == CHARGE_WITH_SIXTEEN_DAYS_LEFT
    assert reply.error.details["quoted_at"] == SIXTEEN_DAYS_LEFT
    assert world.count_recorded() == before


@pytest.mark.parametrize("accept_charge_cents", [None, 100_000])
def test_an_admin_without_billing_manage_cannot_buy_the_seat_an_invitation_needs(accept_charge_cents: int | None) -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")  # owner + admin + 1 free seat
    world.invite("a@example.com", by=user("admin1"))
    before = world.count_recorded()

    reply = world.run(
        "invite_member",
        user("admin1"),
        email="b@example.com",
        role="developer",
        **({"accept_charge_cents": accept_charge_cents} if accept_charge_cents is not None else {}),
    )

    assert reply.error is not None and reply.error.code == "permission_denied"
    assert world.count_recorded() == before


def test_a_free_org_cannot_invite_and_is_told_which_plan_it_needs() -> None:
    world = new_org("free")

    reply = world.run("invite_member", OWNER, email="a@example.com", role="developer", accept_charge_cents=100_000)

    assert reply.error is not None and reply.error.code == "plan_required"
    assert reply.error.details["required_plan"] == "pro"
    assert world.quote()["seats_total"] == 1


# -- expiry, resend and revoke -------------------------------------------------------------


def test_an_invitation_expires_seven_days_after_it_was_sent() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)

    assert invitation["expires_at"] == T0 + WEEK
    world.clock.set(T0 + WEEK - MICROSECOND)
    assert world.quote()["seats_used"] == 2
    world.clock.set(T0 + WEEK)
    assert world.quote()["seats_used"] == 1
    statuses = {i.invitation_id: i.status for i in world.app.view_organization(world.org_id).invitations}
    assert statuses[invitation["invitation_id"]] == "expired"


def test_an_invitation_can_be_accepted_until_the_last_microsecond_before_it_expires() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    world.clock.set(T0 + WEEK - MICROSECOND)

    reply = world.accept(invitation, "alice")

    assert reply.ok and reply.result == {"user_id": "alice", "role": "developer"}
    assert world.role_of("alice") == "developer"


def test_accepting_an_expired_invitation_is_refused_as_expired() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    world.clock.set(T0 + WEEK)

    reply = world.accept(invitation, "alice")

    assert reply.error is not None and reply.error.code == "expired"
    assert world.role_of("alice") is None


def test_an_expired_invitation_frees_its_seat() -> None:
    world = filled_pro_org()
    world.clock.set(T0 + WEEK)

    reply = world.run("invite_member", OWNER, email="c@example.com", role="developer")

    assert reply.ok and reply.result["seat_charge_cents"] == 0
    assert world.event_types_of(reply) == ["MemberInvited"]


def test_resending_extends_the_expiry_and_invalidates_the_old_token() -> None:
    # given an invitation sent at T0, resent three days later
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    old_token = world.token(invitation["invitation_id"], invitation["expires_at"])
    world.clock.set(T0 + 3 * DAY)
    resent = world.ok("resend_invitation", OWNER, invitation_id=invitation["invitation_id"])
    assert resent == {"invitation_id": invitation["invitation_id"], "expires_at": T0 + 10 * DAY}

    # when the old token is used, then it no longer matches
    stale = world.accept(invitation, "alice", token=old_token)
    assert stale.error is not None and stale.error.code == "invalid_token"

    # and the new one works after the first expiry has passed
    world.clock.set(T0 + 8 * DAY)
    assert world.quote()["seats_used"] == 2
    fresh = world.accept(invitation, "alice", token=world.token(invitation["invitation_id"], resent["expires_at"]))
    assert fresh.ok, fresh.error


def test_a_wrong_token_is_refused() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)

    reply = world.accept(invitation, "alice", token="not-the-token")

    assert reply.error is not None and reply.error.code == "invalid_token"


def test_revoking_an_invitation_frees_its_seat_at_once() -> None:
    world = filled_pro_org()

    world.ok("revoke_invitation", OWNER, invitation_id=world.invitations["a@example.com"]["invitation_id"])

    assert world.quote()["seats_used"] == 2
    reply = world.run("invite_member", OWNER, email="c@example.com", role="developer")
    assert reply.ok and reply.result["seat_charge_cents"] == 0


def test_accepting_a_revoked_invitation_is_refused_as_expired() -> None:
    world = new_org("pro")
    invitation = world.invite("a@example.com", by=OWNER)
    world.ok("revoke_invitation", OWNER, invitation_id=invitation["invitation_id"])

    reply = world.accept(invitation, "alice")

    assert reply.error is not None and reply.error.code == "expired"
    assert world.role_of("alice") is None


# -- duplicates -------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["a@example.com", "  A@Example.COM "])
def test_one_pending_invitation_per_email(spelling: str) -> None:
    world = new_org("pro")
    world.invite("a@example.com", by=OWNER)

    reply = world.run("invite_member", OWNER, email=spelling, role="admin")

    assert reply.error is not None and reply.error.code == "conflict"
    assert world.quote()["seats_used"] == 2


def test_an_email_can_be_invited_again_once_its_invitation_expired() -> None:
    world = new_org("pro")
    world.invite("a@example.com", by=OWNER)
    world.clock.set(T0 + WEEK)

    assert world.run("invite_member", OWNER, email="a@example.com", role="developer").ok


@pytest.mark.parametrize("spelling", [email_of("owner1"), email_of("owner1").upper()])
def test_inviting_someone_who_is_already_a_member_is_a_conflict(spelling: str) -> None:
    world = new_org("pro")

    reply = world.run("invite_member", OWNER, email=spelling, role="developer")

    assert reply.error is not None and reply.error.code == "conflict"


# -- the last owner ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, fields",
    [("change_role", {"user_id": "owner1", "role": "admin"}), ("remove_member", {"user_id": "owner1"})],
    ids=["demote", "remove"],
)
@pytest.mark.parametrize("actor", [OWNER, SYSTEM], ids=["self", "platform"])
def test_the_only_owner_can_be_neither_demoted_nor_removed(command: str, fields: dict, actor: dict) -> None:
    world = new_org("pro")
    world.add_member("admin1", "admin")

    reply = world.run(command, actor, **fields)

    assert reply.error is not None and reply.error.code == "last_owner"
    assert world.role_of("owner1") == "owner"


def test_with_two_owners_one_can_be_demoted_and_then_the_other_is_protected() -> None:
    world = new_org("pro")
    world.add_member("owner2", "owner")

    demoted = world.run("change_role", user("owner2"), user_id="owner1", role="admin")
    assert demoted.ok and world.role_of("owner1") == "admin"
    assert world.event_types_of(demoted) == ["RoleChanged"]

    last = world.run("remove_member", user("owner2"), user_id="owner2")
    assert last.error is not None and last.error.code == "last_owner"


def test_with_two_owners_one_can_remove_the_other() -> None:
    world = new_org("pro")
    world.add_member("owner2", "owner")

    reply = world.run("remove_member", OWNER, user_id="owner2")

    assert reply.ok and reply.result == {"user_id": "owner2", "revoked_api_keys": [], "revoked_invitations": []}
    assert world.event_types_of(reply) == ["MemberRemoved"]
    assert world.role_of("owner2") is None
    assert world.quote()["seats_used"] == 1


# -- removing members --------------------------------------------------------------------------


def test_removing_a_member_revokes_their_api_keys_in_the_same_command() -> None:
    # given a developer with two keys of their own and one already revoked
    world = full_org()
    second = world.create_key("dev1-second", ["gateway:use"], by=user("dev1"), owner_user_id="dev1")
    gone = world.create_key("dev1-gone", ["gateway:use"], by=user("dev1"), owner_user_id="dev1")
    world.ok("revoke_api_key", user("dev1"), key_id=gone)
    service_key = world.create_key("service", ["gateway:use"])

    # when an admin removes the developer
    reply = world.run("remove_member", user("admin1"), user_id="dev1")

    # then the member's live keys are revoked by the same command, and only those
    expected = sorted([world.keys["own:dev1"], second])
    assert reply.ok
    assert reply.result == {"user_id": "dev1", "revoked_api_keys": expected, "revoked_invitations": []}
    assert world.event_types_of(reply) == ["MemberRemoved", "ApiKeyRevoked", "ApiKeyRevoked"]
    revocations = world.events_of(reply)[1:]
    assert sorted(e.key_id for e in revocations) == expected
    assert {e.reason for e in revocations} == {"member_removed"}
    assert world.authorize_key(world.keys["own:dev1"], "api_keys:read")["allowed"] is False
    assert world.authorize_key(service_key, "gateway:use")["allowed"] is True


def test_a_member_may_remove_themself_and_frees_their_seat() -> None:
    world = full_org()

    reply = world.run("remove_member", user("dev1"), user_id="dev1")

    assert reply.ok and world.role_of("dev1") is None
    assert world.quote()["seats_used"] == 5


# -- buying and removing seats ----------------------------------------------------------------


def test_adding_seats_charges_the_prorated_amount_for_the_rest_of_the_period() -> None:
    world = new_org("pro")
    world.clock.set(SIXTEEN_DAYS_LEFT)

    reply = world.run("add_seats", OWNER, quantity=2, accept_charge_cents=1032)

    # 2000 * 16 / 31 = 1032.26 -> 1032
    assert reply.ok and reply.result == {"seats_total": 5, "charge_cents": 1032}
    (added,) = world.events_of(reply)
    assert (added.quantity, added.seats_total, added.unit_price_cents, added.charge_cents) == (2, 5, 1000, 1032)
    assert world.quote()["seats_purchased"] == 2


def test_adding_seats_below_the_charge_due_is_a_charge_mismatch() -> None:
    world = new_org("pro")
    world.clock.set(SIXTEEN_DAYS_LEFT)

    reply = world.run("add_seats", OWNER, quantity=2, accept_charge_cents=1031)

    assert reply.error is not None and reply.error.code == "charge_mismatch"
    assert world.quote()["seats_purchased"] == 0


def test_removing_unused_purchased_seats_credits_the_prorated_amount() -> None:
    world = new_org("pro")
    world.ok("add_seats", OWNER, quantity=3, accept_charge_cents=3000)
    world.clock.set(SIXTEEN_DAYS_LEFT)

    reply = world.run("remove_seats", OWNER, quantity=2)

    assert reply.ok and reply.result == {"seats_total": 4, "credit_cents": 1032}
    (removed,) = world.events_of(reply)
    assert type(removed).__name__ == "SeatRemoved"
    assert (removed.quantity, removed.seats_total, removed.credit_cents) == (2, 4, 1032)
    assert world.quote()["seats_purchased"] == 1


def test_seats_still_in_use_cannot_be_removed() -> None:
    world = filled_pro_org()
    world.ok("add_seats", OWNER, quantity=1, accept_charge_cents=1000)
    world.invite("c@example.com", by=OWNER)  # 4 of 4 in use

    reply = world.run("remove_seats", OWNER, quantity=1)

    assert reply.error is not None and reply.error.code == "conflict"
    assert world.quote()["seats_total"] == 4


def test_included_seats_cannot_be_removed() -> None:
    world = new_org("pro")

    reply = world.run("remove_seats", OWNER, quantity=1)

    assert reply.error is not None and reply.error.code == "conflict"
    assert world.quote()["seats_total"] == 3


def test_purchased_seats_stay_purchased_after_the_member_using_them_leaves() -> None:
    world = new_org("pro")
    for name in ("u1", "u2", "u3"):
        world.add_member(name, "developer")
    assert world.quote()["seats_purchased"] == 1

    world.ok("remove_member", OWNER, user_id="u3")

    quote = world.quote()
    assert (quote["seats_purchased"], quote["seats_total"], quote["seats_used"]) == (1, 4, 3)


# -- plans -----------------------------------------------------------------------------------------


def test_moving_from_free_to_pro_resets_the_billing_anchor() -> None:
    world = new_org("free")
    upgraded_at = T0.replace(month=5, day=20, hour=14)
    world.clock.set(upgraded_at)

    reply = world.run("change_plan", OWNER, plan="pro")

    assert reply.ok and reply.result == {"plan": "pro"}
    (changed,) = world.events_of(reply)
    assert (changed.from_plan, changed.to_plan, changed.seats_included) == ("free", "pro", 3)
    assert changed.billing_anchor == upgraded_at
    quote = world.quote()
    assert (quote["billing_period_start"], quote["billing_period_end"]) == (upgraded_at, upgraded_at.replace(month=6))
    assert quote["seats_total"] == 3
    # a seat bought at the moment of the upgrade costs the whole new period
    assert quote["next_seat_charge_cents"] == 1000


def test_moving_between_paid_plans_keeps_the_billing_anchor() -> None:
    world = new_org("pro")
    world.clock.set(SIXTEEN_DAYS_LEFT)

    reply = world.run("change_plan", OWNER, plan="enterprise")

    (changed,) = world.events_of(reply)
    assert changed.billing_anchor == T0
    assert world.quote()["billing_period_start"] == T0


def test_the_billing_period_starts_at_the_org_creation() -> None:
    world = new_org("pro", start=T0.replace(month=1, day=31))

    (created,) = world.recorded()
    quote = world.quote()

    assert type(created).__name__ == "OrganizationCreated"
    assert created.billing_anchor == T0.replace(month=1, day=31)
    assert (quote["billing_period_start"], quote["billing_period_end"]) == (
        T0.replace(month=1, day=31),
        T0.replace(month=2, day=29),
    )


def test_the_invitation_flow_works_for_a_service_key_that_holds_what_the_role_grants() -> None:
    world = new_org("pro")
    key_id = world.create_key("hr-bot", sorted(permissions_of("admin")))

    invitation = world.ok("invite_member", api_key(key_id), email="a@example.com", role="admin")

    assert world.accept(invitation, "alice").result == {"user_id": "alice", "role": "admin"}


def test_a_key_that_may_only_invite_cannot_give_a_role_beyond_itself() -> None:
    """Inviting someone as an admin hands out the admin's rights: a key holding only members:invite
    would otherwise mint an admin, who may mint keys beyond the key's own."""
    world = new_org("pro")
    key_id = world.create_key("hr-bot", ["members:invite"])
    recorded = world.count_recorded()

    for role in ("developer", "admin"):
        reply = world.run("invite_member", api_key(key_id), email=f"{role}@example.com", role=role)
        assert reply.error is not None and reply.error.code == "permission_denied", role
        assert reply.error.details["reason"] == "role_beyond_assigner"
        assert "gateway:use" in reply.error.details["missing"]
    assert world.count_recorded() == recorded


def test_a_copy_decided_on_leaves_the_cached_organizations_indexes_as_they_were() -> None:
    """A command decides on a copy that shares the index lists (`Organization.__deepcopy__`):
    the events replace a list, never change it, so the cached organization keeps its own."""
    world = new_org("pro")
    first = world.invite("a@example.com", by=OWNER)
    world.invite("b@example.com", by=OWNER)
    world.ok("revoke_invitation", OWNER, invitation_id=first["invitation_id"])
    world.invite("a@example.com", by=OWNER)
    cached = world.app.organization(world.org_id)
    indexes_before = copy.deepcopy((cached.open_by_email, cached.open_expiries, cached.member_emails))

    decided_on = copy.deepcopy(cached)
    for invitation_id in list(decided_on.open_by_email["a@example.com"]):
        decided_on.close_invitation(invitation_id, "revoked")
    decided_on.open_invitation(replace(decided_on.invitations[first["invitation_id"]], invitation_id="inv_new", status="pending"))
    decided_on.join(replace(next(iter(decided_on.members.values())), user_id="someone", email="s@example.com"))

    assert (cached.open_by_email, cached.open_expiries, cached.member_emails) == indexes_before
    assert decided_on.open_by_email["a@example.com"] == ["inv_new"]
