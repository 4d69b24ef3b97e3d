"""The Organization aggregate: every rule about members, invitations, seats and API keys.

Command methods check, then trigger events; `events.py` says how each event changes state.
Checks follow the contract's order: permission, plan, target, business rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from shared import pricing
from shared.contract.common import Actor

from . import events as ev
from .errors import (
    ChargeMismatch,
    Conflict,
    Expired,
    InvalidToken,
    LastOwner,
    NotFound,
    PermissionDenied,
    PlanRequired,
    SeatPurchaseRequired,
    ValidationFailed,
)
from .permissions import ROLE_PERMISSIONS, permissions_of

INVITATION_LIFETIME = timedelta(days=7)
SCIM_PERMISSIONS = frozenset({"org:read", "members:read", "members:invite", "members:manage", "owners:manage"})
_ALL_PERMISSIONS = ROLE_PERMISSIONS["owner"]


def org_uuid(org_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"team-members:organization:{org_id}")


@dataclass(frozen=True)
class CommandContext:
    """Who asks, under which idempotency key, and when."""

    actor: Actor
    command_id: str
    correlation_id: str | None
    now: datetime
    new_id: Callable[[str], str]


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    prefix: str
    secret_hash: str


class Organization(Aggregate):
    """State, set by the events: `org_id`, `name`, `plan`, `seats_included`, `seats_purchased`,
    `unit_price_cents`, `billing_anchor`, and dicts of `members`, `invitations` and `api_keys`
    by id, plus `commands`: each recorded command's event ids and reply."""

    # -- creation ---------------------------------------------------------

    @classmethod
    def create(cls, ctx: CommandContext, org_id: str, name: str, plan: str, owner_user_id: str, owner_email: str) -> Organization:
        if ctx.actor.type != "system" and not (ctx.actor.type == "user" and ctx.actor.id == owner_user_id):
            raise PermissionDenied("only the platform or the future owner may create an organization")
        start, end = pricing.billing_period(ctx.now, ctx.now)
        result = {"org_id": org_id, "billing_period_start": start, "billing_period_end": end}
        return cls._create(
            ev.OrganizationCreated,
            id=org_uuid(org_id),
            timestamp=ctx.now,
            **_provenance(ctx, org_id, result),
            name=name,
            plan=plan,
            owner_user_id=owner_user_id,
            owner_email=owner_email,
            seats_included=pricing.INCLUDED_SEATS[plan],
            unit_price_cents=pricing.UNIT_PRICE_CENTS,
            billing_anchor=ctx.now,
        )

    # -- idempotency --------------------------------------------------------

    def remember_command(self, command_id: str, event_id: str, result: dict[str, Any] | None) -> None:
        outcome = self.commands.setdefault(command_id, {"events": [], "result": None})
        outcome["events"].append(event_id)
        if result is not None:
            outcome["result"] = result

    def outcome_of(self, command_id: str) -> dict[str, Any] | None:
        return self.commands.get(command_id)

    # -- who is asking ------------------------------------------------------

    def permissions_of(self, actor: Actor, now: datetime) -> frozenset[str]:
        if actor.type == "system":
            return _ALL_PERMISSIONS
        if actor.type == "scim":
            return SCIM_PERMISSIONS
        if actor.type == "user":
            member = self.members.get(actor.id)
            return permissions_of(member["role"]) if member else frozenset()
        key = self.api_keys.get(actor.id)
        return self.key_permissions(key, now) if key else frozenset()

    def key_permissions(self, key: dict[str, Any], now: datetime) -> frozenset[str]:
        """A key acts with its own permissions, never beyond its owner's current ones."""
        if key["revoked"] or (key["expires_at"] is not None and now >= key["expires_at"]):
            return frozenset()
        granted = frozenset(key["permissions"])
        if key["owner_user_id"] is None:
            return granted
        owner = self.members.get(key["owner_user_id"])
        return granted & permissions_of(owner["role"]) if owner else frozenset()

    def acting_user_id(self, actor: Actor) -> str | None:
        if actor.type == "user":
            return actor.id
        if actor.type == "api_key" and actor.id in self.api_keys:
            return self.api_keys[actor.id]["owner_user_id"]
        return None

    def require(self, ctx: CommandContext, *needed: str) -> None:
        granted = self.permissions_of(ctx.actor, ctx.now)
        missing = [permission for permission in needed if permission not in granted]
        if missing:
            raise PermissionDenied(f"{ctx.actor.type} {ctx.actor.id} lacks {', '.join(missing)}", missing=missing)

    def require_scim_plan(self, ctx: CommandContext) -> None:
        if ctx.actor.type == "scim" and self.plan != "enterprise":
            raise PlanRequired("SCIM provisioning needs the enterprise plan", required_plan="enterprise")

    # -- seats ----------------------------------------------------------------

    @property
    def seats_total(self) -> int:
        return self.seats_included + self.seats_purchased

    def seats_used(self, now: datetime) -> int:
        return len(self.members) + len(self.pending_invitations(now))

    def pending_invitations(self, now: datetime) -> list[dict[str, Any]]:
        return [i for i in self.invitations.values() if i["status"] == "pending" and now < i["expires_at"]]

    def billing_period(self, now: datetime) -> tuple[datetime, datetime]:
        return pricing.billing_period(self.billing_anchor, now)

    def seat_charge(self, quantity: int, now: datetime) -> int:
        start, end = self.billing_period(now)
        return pricing.prorate(self.unit_price_cents, quantity, start, end, now)

    def seat_quote(self, now: datetime) -> dict[str, Any]:
        start, end = self.billing_period(now)
        used = self.seats_used(now)
        return {
            "seats_included": self.seats_included,
            "seats_purchased": self.seats_purchased,
            "seats_total": self.seats_total,
            "seats_used": used,
            "seats_available": max(self.seats_total - used, 0),
            "unit_price_cents": self.unit_price_cents,
            "next_seat_charge_cents": self.seat_charge(1, now) if self.plan != "free" else 0,
            "billing_period_start": start,
            "billing_period_end": end,
            "quoted_at": now,
        }

    def _buy_seats(self, ctx: CommandContext, quantity: int, accept_charge_cents: int, result: dict[str, Any] | None) -> int:
        charge = self.seat_charge(quantity, ctx.now)
        if accept_charge_cents < charge:
            raise ChargeMismatch(
                f"the charge due now is {charge} cents, more than the {accept_charge_cents} accepted",
                **self.seat_quote(ctx.now),
            )
        start, end = self.billing_period(ctx.now)
        self._trigger(
            ev.SeatAdded,
            ctx,
            result,
            quantity=quantity,
            seats_total=self.seats_total + quantity,
            unit_price_cents=self.unit_price_cents,
            charge_cents=charge,
            billing_period_start=start,
            billing_period_end=end,
        )
        return charge

    # -- commands -------------------------------------------------------------

    def change_plan(self, ctx: CommandContext, plan: str) -> dict[str, Any]:
        self.require(ctx, "billing:manage")
        result = {"plan": plan}
        if plan == self.plan:
            return result
        if plan == "free" and (self.seats_used(ctx.now) > 1 or self.seats_purchased):
            raise Conflict("move to free needs one member, no pending invitation and no purchased seat")
        anchor = ctx.now if self.plan == "free" else self.billing_anchor
        self._trigger(
            ev.PlanChanged,
            ctx,
            result,
            from_plan=self.plan,
            to_plan=plan,
            seats_included=pricing.INCLUDED_SEATS[plan],
            billing_anchor=anchor,
        )
        return result

    def invite_member(self, ctx: CommandContext, email: str, role: str, accept_charge_cents: int | None) -> dict[str, Any]:
        self.require(ctx, "members:invite", *(["owners:manage"] if role == "owner" else []))
        self._require_paid_plan(ctx)
        if any(m["email"] == email for m in self.members.values()):
            raise Conflict(f"{email} is already a member")
        if any(i["email"] == email for i in self.pending_invitations(ctx.now)):
            raise Conflict(f"{email} already has a pending invitation")
        invitation_id = ctx.new_id("inv")
        expires_at = ctx.now + INVITATION_LIFETIME
        seat_charge = 0
        if self.seats_used(ctx.now) >= self.seats_total:
            self._require_purchase_allowed(ctx, accept_charge_cents)
            seat_charge = self._buy_seats(ctx, 1, accept_charge_cents, None)
        result = {"invitation_id": invitation_id, "expires_at": expires_at, "seat_charge_cents": seat_charge}
        self._trigger(
            ev.MemberInvited,
            ctx,
            result,
            invitation_id=invitation_id,
            email=email,
            role=role,
            invited_by={"type": ctx.actor.type, "id": ctx.actor.id},
            expires_at=expires_at,
        )
        return result

    def resend_invitation(self, ctx: CommandContext, invitation_id: str) -> dict[str, Any]:
        self.require(ctx, "members:invite")
        self._require_paid_plan(ctx)
        invitation = self._invitation(invitation_id)
        if invitation["status"] != "pending":
            raise Conflict(f"invitation {invitation_id} is {invitation['status']}")
        lapsed = ctx.now >= invitation["expires_at"]
        if lapsed and self.seats_used(ctx.now) >= self.seats_total:
            raise SeatPurchaseRequired("the invitation lapsed and no seat is free for it", **self.seat_quote(ctx.now))
        expires_at = ctx.now + INVITATION_LIFETIME
        result = {"invitation_id": invitation_id, "expires_at": expires_at}
        self._trigger(ev.InvitationResent, ctx, result, invitation_id=invitation_id, email=invitation["email"], expires_at=expires_at)
        return result

    def revoke_invitation(self, ctx: CommandContext, invitation_id: str) -> dict[str, Any]:
        self.require(ctx, "members:invite")
        invitation = self._invitation(invitation_id)
        if invitation["status"] != "pending":
            raise Conflict(f"invitation {invitation_id} is {invitation['status']}")
        result = {"invitation_id": invitation_id}
        self._trigger(ev.InvitationRevoked, ctx, result, invitation_id=invitation_id, email=invitation["email"])
        return result

    def accept_invitation(
        self, ctx: CommandContext, invitation_id: str, user_id: str, token_matches: Callable[[str, datetime], bool]
    ) -> dict[str, Any]:
        if ctx.actor.type != "user" or ctx.actor.id != user_id:
            raise PermissionDenied("only the invited user may accept an invitation")
        invitation = self._invitation(invitation_id)
        if not token_matches(invitation_id, invitation["expires_at"]):
            raise InvalidToken("the invitation token does not match")
        if invitation["status"] == "revoked":
            raise Expired(f"invitation {invitation_id} was revoked")
        if invitation["status"] == "accepted":
            raise Conflict(f"invitation {invitation_id} was already accepted")
        if ctx.now >= invitation["expires_at"]:
            raise Expired(f"invitation {invitation_id} expired at {invitation['expires_at'].isoformat()}")
        if user_id in self.members:
            raise Conflict(f"user {user_id} is already a member")
        result = {"user_id": user_id, "role": invitation["role"]}
        self._trigger(
            ev.InvitationAccepted,
            ctx,
            result,
            invitation_id=invitation_id,
            user_id=user_id,
            email=invitation["email"],
            role=invitation["role"],
        )
        return result

    def change_role(self, ctx: CommandContext, user_id: str, role: str) -> dict[str, Any]:
        self.require(ctx, "members:manage")
        member = self.members.get(user_id)
        if role == "owner" or (member is not None and member["role"] == "owner"):
            self.require(ctx, "owners:manage")
        member = self._member(user_id)
        result = {"user_id": user_id, "role": role}
        if member["role"] == role:
            return result
        if member["role"] == "owner":
            self._require_another_owner(user_id)
        self._trigger(ev.RoleChanged, ctx, result, user_id=user_id, email=member["email"], from_role=member["role"], to_role=role)
        return result

    def remove_member(self, ctx: CommandContext, user_id: str) -> dict[str, Any]:
        leaving_by_choice = self.acting_user_id(ctx.actor) == user_id and ctx.actor.type == "user"
        if not leaving_by_choice:
            self.require(ctx, "members:manage")
            if self.members.get(user_id, {}).get("role") == "owner":
                self.require(ctx, "owners:manage")
        member = self._member(user_id)
        if member["role"] == "owner":
            self._require_another_owner(user_id)
        revoked = sorted(k["key_id"] for k in self.api_keys.values() if k["owner_user_id"] == user_id and not k["revoked"])
        result = {"user_id": user_id, "revoked_api_keys": revoked}
        self._trigger(ev.MemberRemoved, ctx, None if revoked else result, user_id=user_id, email=member["email"], role=member["role"])
        for position, key_id in enumerate(revoked, start=1):
            self._trigger(ev.ApiKeyRevoked, ctx, result if position == len(revoked) else None, key_id=key_id, reason="member_removed")
        return result

    def add_seats(self, ctx: CommandContext, quantity: int, accept_charge_cents: int) -> dict[str, Any]:
        self.require(ctx, "billing:manage")
        self._require_paid_plan(ctx)
        charge = self.seat_charge(quantity, ctx.now)
        result = {"seats_total": self.seats_total + quantity, "charge_cents": charge}
        self._buy_seats(ctx, quantity, accept_charge_cents, result)
        return result

    def remove_seats(self, ctx: CommandContext, quantity: int) -> dict[str, Any]:
        self.require(ctx, "billing:manage")
        self._require_paid_plan(ctx)
        if quantity > self.seats_purchased:
            raise Conflict(f"only {self.seats_purchased} purchased seats can be removed", seats_purchased=self.seats_purchased)
        if self.seats_total - quantity < self.seats_used(ctx.now):
            raise Conflict("those seats are still in use", **self.seat_quote(ctx.now))
        start, end = self.billing_period(ctx.now)
        credit = pricing.prorate(self.unit_price_cents, quantity, start, end, ctx.now)
        result = {"seats_total": self.seats_total - quantity, "credit_cents": credit}
        self._trigger(
            ev.SeatRemoved,
            ctx,
            result,
            quantity=quantity,
            seats_total=self.seats_total - quantity,
            unit_price_cents=self.unit_price_cents,
            credit_cents=credit,
            billing_period_start=start,
            billing_period_end=end,
        )
        return result

    def create_api_key(
        self,
        ctx: CommandContext,
        name: str,
        permissions: list[str],
        owner_user_id: str | None,
        expires_at: datetime | None,
        new_key: Callable[[str], NewApiKey],
    ) -> dict[str, Any]:
        for_themself = owner_user_id is not None and owner_user_id == self.acting_user_id(ctx.actor)
        self.require(ctx, "api_keys:own" if for_themself else "api_keys:manage")
        beyond = sorted(set(permissions) - self.permissions_of(ctx.actor, ctx.now))
        if beyond:
            raise PermissionDenied(f"a key cannot hold permissions its creator lacks: {', '.join(beyond)}", missing=beyond)
        if owner_user_id is not None:
            self._member(owner_user_id)
        if expires_at is not None and expires_at <= ctx.now:
            raise ValidationFailed("expires_at must lie in the future", field="expires_at")
        key = new_key(ctx.new_id("key"))
        result = {"key_id": key.key_id, "prefix": key.prefix}
        self._trigger(
            ev.ApiKeyCreated,
            ctx,
            result,
            key_id=key.key_id,
            name=name,
            prefix=key.prefix,
            owner_user_id=owner_user_id,
            permissions=sorted(set(permissions)),
            expires_at=expires_at,
            secret_hash=key.secret_hash,
        )
        return result

    def revoke_api_key(self, ctx: CommandContext, key_id: str) -> dict[str, Any]:
        key = self.api_keys.get(key_id)
        owns_it = key is not None and key["owner_user_id"] is not None and key["owner_user_id"] == self.acting_user_id(ctx.actor)
        if not owns_it:
            self.require(ctx, "api_keys:manage")
        if key is None:
            raise NotFound(f"API key {key_id} does not exist")
        if key["revoked"]:
            raise Conflict(f"API key {key_id} is already revoked")
        result = {"key_id": key_id}
        self._trigger(ev.ApiKeyRevoked, ctx, result, key_id=key_id, reason="revoked")
        return result

    # -- helpers --------------------------------------------------------------

    def _require_paid_plan(self, ctx: CommandContext) -> None:
        self.require_scim_plan(ctx)
        if self.plan == "free":
            raise PlanRequired("the free plan has a single seat; upgrade to invite teammates", required_plan="pro")

    def _require_purchase_allowed(self, ctx: CommandContext, accept_charge_cents: int | None) -> None:
        if "billing:manage" not in self.permissions_of(ctx.actor, ctx.now):
            raise PermissionDenied("no seat is free, and buying one needs billing:manage", missing=["billing:manage"])
        if accept_charge_cents is None:
            raise SeatPurchaseRequired("no seat is free: accept the seat charge to buy one", **self.seat_quote(ctx.now))

    def _require_another_owner(self, user_id: str) -> None:
        if not any(m["role"] == "owner" for uid, m in self.members.items() if uid != user_id):
            raise LastOwner("the organization must keep at least one owner")

    def _member(self, user_id: str) -> dict[str, Any]:
        try:
            return self.members[user_id]
        except KeyError:
            raise NotFound(f"user {user_id} is not a member") from None

    def _invitation(self, invitation_id: str) -> dict[str, Any]:
        try:
            return self.invitations[invitation_id]
        except KeyError:
            raise NotFound(f"invitation {invitation_id} does not exist") from None

    def _trigger(self, event_class: type[ev.OrganizationEvent], ctx: CommandContext, result: dict[str, Any] | None, **data: Any) -> None:
        self.trigger_event(event_class, timestamp=ctx.now, **_provenance(ctx, self.org_id, result), **data)


def _provenance(ctx: CommandContext, org_id: str, result: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "event_id": ctx.new_id("evt"),
        "actor": {"type": ctx.actor.type, "id": ctx.actor.id},
        "command_id": ctx.command_id,
        "correlation_id": ctx.correlation_id,
        "result": result,
    }
