"""The Organization aggregate: every rule about members, invitations, seats and API keys.

Command methods check, then trigger events; `events.py` says how each event changes state.
Checks follow the contract's order: permission, plan, target, business rules.
A command is decided on a copy of the organization (`__deepcopy__`), so nothing shared changes
before its events are saved.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from shared import pricing
from shared.contract.common import Actor
from shared.errors import (
    ChargeMismatch,
    Conflict,
    Expired,
    Invalid,
    InvalidToken,
    LastOwner,
    NotFound,
    PermissionDenied,
    PlanRequired,
    SeatPurchaseRequired,
)

from . import events as ev
from .permissions import ROLE_PERMISSIONS, is_builtin, permissions_of
from .scopes import NO_PROJECT, Scope, beyond, listed, narrowed, scope_of
from .values import ActorRef, ApiKey, CustomRole, Invitation, InvitationStatus, Member

INVITATION_LIFETIME = timedelta(days=7)
# Removing a member revokes their keys in one change, and its reply lists them: the cap keeps that
# reply (and the change) well inside the bus's 1 MB payload.
MAX_UNREVOKED_KEYS = 5000
SCIM_PERMISSIONS = frozenset({"org:read", "members:read", "members:invite", "members:manage", "owners:manage"})
_ALL_PERMISSIONS = ROLE_PERMISSIONS["owner"]
_NOTHING: frozenset[str] = frozenset()


@lru_cache(maxsize=4096)
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
    """What the store keeps of a key minted for `create_api_key`: never the secret itself."""

    key_id: str
    prefix: str
    secret_hash: str


class Organization(Aggregate):
    """State, set by the events: `org_id`, `name`, `plan`, `seats_included`, `seats_purchased`,
    `unit_price_cents`, `billing_anchor`, and `members`, `invitations` and `api_keys`: dicts of
    immutable values by id. Beside them, indexes the events keep so that a command does not scan
    every invitation: `member_emails` (email -> user id), and of the open invitations (status
    `pending`, lapsed or not) `open_expiries` (sorted) and `open_by_email` (email -> ids; each list
    is replaced when it changes, never changed in place, so a copy of the organization shares them).
    `roles` holds the custom roles an enterprise organization defined, by key."""

    class_version = 4

    if TYPE_CHECKING:  # set by the events; annotated here for readers and mypy, not as constructor fields
        org_id: str
        name: str
        plan: str
        seats_included: int
        seats_purchased: int
        unit_price_cents: int
        billing_anchor: datetime
        members: dict[str, Member]
        invitations: dict[str, Invitation]
        api_keys: dict[str, ApiKey]
        member_emails: dict[str, str]
        open_expiries: list[datetime]
        open_by_email: dict[str, list[str]]
        roles: dict[str, CustomRole]

    def __deepcopy__(self, memo: dict[int, Any]) -> Organization:
        """The values are immutable: a copy needs fresh dicts, not fresh values."""
        copy = object.__new__(type(self))
        state = dict(vars(self))
        for name in ("members", "invitations", "api_keys", "member_emails", "roles"):
            state[name] = dict(state[name])
        state["open_expiries"] = list(state["open_expiries"])
        state["open_by_email"] = dict(state["open_by_email"])  # its lists are replaced, never changed in place
        state["_pending_events"] = list(state["_pending_events"])
        copy.__dict__.update(state)
        return copy

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        """Snapshots from before custom roles: none were defined."""
        state["roles"] = {}

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """Snapshots from before the indexes: derived from the members and invitations."""
        state.update(indexes_of(state["members"], state["invitations"]))

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshots from before the values: nested dicts, and a map of command replies (now kept apart)."""
        state.pop("commands", None)
        state["members"] = {uid: Member(**m) for uid, m in state["members"].items()}
        state["invitations"] = {
            iid: Invitation(
                invitation_id=i["invitation_id"],
                email=i["email"],
                role=i["role"],
                invited_at=i["expires_at"] - INVITATION_LIFETIME,
                expires_at=i["expires_at"],
                status=i["status"],
            )
            for iid, i in state["invitations"].items()
        }
        state["api_keys"] = {
            kid: ApiKey(
                key_id=k["key_id"],
                name=k["name"],
                prefix=k["prefix"],
                owner_user_id=k["owner_user_id"],
                permissions=frozenset(k["permissions"]),
                expires_at=k["expires_at"],
                secret_hash=k["secret_hash"],
                created_at=datetime(1970, 1, 1, tzinfo=UTC),
                created_by=None,
                revoked=k["revoked"],
            )
            for kid, k in state["api_keys"].items()
        }

    # -- creation ---------------------------------------------------------

    @classmethod
    def create(cls, ctx: CommandContext, org_id: str, name: str, plan: str, owner_user_id: str, owner_email: str) -> Organization:
        require_creator(ctx.actor, owner_user_id)
        return cls._create(
            ev.OrganizationCreated,
            id=org_uuid(org_id),
            timestamp=ctx.now,
            **_provenance(ctx, org_id),
            name=name,
            plan=plan,
            owner_user_id=owner_user_id,
            owner_email=owner_email,
            seats_included=pricing.INCLUDED_SEATS[plan],
            unit_price_cents=pricing.UNIT_PRICE_CENTS,
            billing_anchor=ctx.now,
        )

    def creation_result(self) -> dict[str, Any]:
        start, end = self.billing_period(self.billing_anchor)
        return {"org_id": self.org_id, "billing_period_start": start, "billing_period_end": end}

    # -- who is asking ------------------------------------------------------

    def permissions_of(self, actor: Actor | ActorRef, now: datetime, _seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """What an actor may do now: a member's role, a live key's own permissions, SCIM's, the platform's."""
        if actor.type == "system":
            return _ALL_PERMISSIONS
        if actor.type == "scim":
            return SCIM_PERMISSIONS
        if actor.type == "user":
            member = self.members.get(actor.id)
            return self.role_permissions(member.role) if member else _NOTHING
        key = self.api_keys.get(actor.id)
        return self.key_permissions(key, now, _seen) if key else _NOTHING

    def project_scope(self, actor: Actor | ActorRef, now: datetime, _seen: frozenset[str] = frozenset()) -> Scope:
        """Where an actor's project-level permissions apply now (None: every project): a member's own
        scope, a key's effective one (`key_scope`); the platform and SCIM are not scoped."""
        if actor.type in ("system", "scim"):
            return None
        if actor.type == "user":
            member = self.members.get(actor.id)
            return member.projects if member else NO_PROJECT
        key = self.api_keys.get(actor.id)
        return self.key_scope(key, now, _seen) if key else NO_PROJECT

    def key_scope(self, key: ApiKey, now: datetime, _seen: frozenset[str] = frozenset()) -> Scope:
        """A key's effective scope: its own, within its owner's current scope and its creator's, as
        `key_permissions` caps its permissions (a key never reaches a project its grantors cannot)."""
        if key.key_id in _seen:
            return NO_PROJECT
        scope = key.projects
        if key.owner_user_id is not None:
            owner = self.members.get(key.owner_user_id)
            scope = narrowed(scope, owner.projects if owner else NO_PROJECT)
        if key.created_by is not None:
            scope = narrowed(scope, self.project_scope(key.created_by, now, _seen | {key.key_id}))
        return scope

    def role_permissions(self, role: str) -> frozenset[str]:
        """A built-in role's permissions, or a custom role's as defined now; an unknown role has none."""
        if is_builtin(role):
            return permissions_of(role)
        custom = self.roles.get(role)
        return custom.permissions if custom is not None else _NOTHING

    def key_permissions(self, key: ApiKey, now: datetime, _seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """What a key may do now: its own permissions while it is live, never beyond its owner's
        current ones, nor beyond those of whoever created it (a key never outranks its grantor)."""
        if key.revoked or key.has_expired(now) or key.key_id in _seen:
            return _NOTHING
        granted = key.permissions
        if key.owner_user_id is not None:
            owner = self.members.get(key.owner_user_id)
            if owner is None:
                return _NOTHING
            granted &= self.role_permissions(owner.role)
        if key.created_by is not None:
            granted &= self.permissions_of(key.created_by, now, _seen | {key.key_id})
        return granted

    def still_vouches_for(self, invitation: Invitation, now: datetime) -> bool:
        """Whether whoever sent the invitation may still invite to its role (an inviter removed,
        demoted or revoked takes their invitations' authority with them)."""
        if invitation.invited_by is None:  # sent before inviters were kept
            return True
        needed = {"members:invite", *(["owners:manage"] if invitation.role == "owner" else [])}
        needed |= self.role_permissions(invitation.role)
        within = beyond(invitation.projects, self.project_scope(invitation.invited_by, now)) == []
        return within and needed <= self.permissions_of(invitation.invited_by, now)

    def is_live(self, key: ApiKey, now: datetime) -> bool:
        return bool(self.key_permissions(key, now))

    def require(self, ctx: CommandContext, *needed: str) -> None:
        """The actor holds every permission needed; a SCIM actor also needs the enterprise plan."""
        granted = self.permissions_of(ctx.actor, ctx.now)
        missing = [permission for permission in needed if permission not in granted]
        if missing:
            raise PermissionDenied(f"{ctx.actor.type} {ctx.actor.id} lacks {', '.join(missing)}", missing=missing)
        self.require_scim_plan(ctx)

    def require_scim_plan(self, ctx: CommandContext) -> None:
        if ctx.actor.type == "scim" and self.plan != "enterprise":
            raise PlanRequired("SCIM provisioning needs the enterprise plan", required_plan="enterprise")

    # -- seats ----------------------------------------------------------------

    @property
    def seats_total(self) -> int:
        return self.seats_included + self.seats_purchased

    def seats_used(self, now: datetime) -> int:
        """Members, and open invitations not yet expired: those expiring after `now`."""
        return len(self.members) + len(self.open_expiries) - bisect_right(self.open_expiries, now)

    def pending_invitations(self, now: datetime) -> list[Invitation]:
        return [i for i in self.invitations.values() if i.is_pending(now)]

    # -- what the events change, with the indexes ----------------------------------------

    def join(self, member: Member) -> None:
        self.members[member.user_id] = member
        self.member_emails[member.email] = member.user_id

    def leave(self, user_id: str) -> None:
        member = self.members.pop(user_id)
        self.member_emails.pop(member.email, None)

    def open_invitation(self, invitation: Invitation) -> None:
        self.invitations[invitation.invitation_id] = invitation
        insort(self.open_expiries, invitation.expires_at)
        self.open_by_email[invitation.email] = [*self.open_by_email.get(invitation.email, ()), invitation.invitation_id]

    def extend_invitation(self, invitation_id: str, expires_at: datetime) -> None:
        before = self.invitations[invitation_id]
        self.invitations[invitation_id] = replace(before, expires_at=expires_at)
        if before.status == "pending":
            self._drop_open_expiry(before.expires_at)
            insort(self.open_expiries, expires_at)

    def close_invitation(self, invitation_id: str, status: InvitationStatus) -> None:
        before = self.invitations[invitation_id]
        self.invitations[invitation_id] = replace(before, status=status)
        if before.status == "pending":
            self._drop_open_expiry(before.expires_at)
            still_open = [i for i in self.open_by_email[before.email] if i != invitation_id]
            if still_open:
                self.open_by_email[before.email] = still_open
            else:
                del self.open_by_email[before.email]

    def _drop_open_expiry(self, expires_at: datetime) -> None:
        del self.open_expiries[bisect_left(self.open_expiries, expires_at)]

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

    def _buy_seats(self, ctx: CommandContext, quantity: int, accept_charge_cents: int) -> int:
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
        if self.plan == "enterprise":
            holders = self._custom_role_holders()
            if any(holders.values()):
                raise Conflict(
                    "custom roles are assigned; give their holders a built-in role first (nothing is downgraded silently)",
                    **holders,
                )
        anchor = ctx.now if self.plan == "free" else self.billing_anchor
        self._trigger(
            ev.PlanChanged,
            ctx,
            from_plan=self.plan,
            to_plan=plan,
            seats_included=pricing.INCLUDED_SEATS[plan],
            billing_anchor=anchor,
        )
        return result

    def invite_member(
        self,
        ctx: CommandContext,
        email: str,
        role: str,
        accept_charge_cents: int | None,
        projects: list[str] | None = None,
    ) -> dict[str, Any]:
        self.require(ctx, "members:invite", *(["owners:manage"] if role == "owner" else []))
        self._require_paid_plan()
        scope = scope_of(projects)
        self._require_scope_within_actor(ctx, scope, "the invitation")
        self._require_assignable(ctx, role)
        needs_seat = self.seats_used(ctx.now) >= self.seats_total
        if needs_seat and "billing:manage" not in self.permissions_of(ctx.actor, ctx.now):
            raise PermissionDenied("no seat is free, and buying one needs billing:manage", missing=["billing:manage"])
        self._require_email_free(email, ctx.now)
        invitation_id = ctx.new_id("inv")
        expires_at = ctx.now + INVITATION_LIFETIME
        seat_charge = 0
        if needs_seat:
            if accept_charge_cents is None:
                raise SeatPurchaseRequired("no seat is free: accept the seat charge to buy one", **self.seat_quote(ctx.now))
            seat_charge = self._buy_seats(ctx, 1, accept_charge_cents)
        self._trigger(
            ev.MemberInvited,
            ctx,
            invitation_id=invitation_id,
            email=email,
            role=role,
            invited_by={"type": ctx.actor.type, "id": ctx.actor.id},
            expires_at=expires_at,
            projects=listed(scope),
        )
        return {"invitation_id": invitation_id, "expires_at": expires_at, "seat_charge_cents": seat_charge}

    def resend_invitation(self, ctx: CommandContext, invitation_id: str) -> dict[str, Any]:
        self.require(ctx, "members:invite")
        self._require_paid_plan()
        invitation = self._invitation(invitation_id)
        if invitation.status == "revoked":
            raise Expired(f"invitation {invitation_id} was revoked")
        if invitation.status == "accepted":
            raise Conflict(f"invitation {invitation_id} was already accepted")
        self._require_email_free(invitation.email, ctx.now, besides=invitation_id)
        if invitation.has_lapsed(ctx.now) and self.seats_used(ctx.now) >= self.seats_total:
            raise SeatPurchaseRequired("the invitation lapsed and no seat is free for it", **self.seat_quote(ctx.now))
        expires_at = ctx.now + INVITATION_LIFETIME
        self._trigger(ev.InvitationResent, ctx, invitation_id=invitation_id, email=invitation.email, expires_at=expires_at)
        return {"invitation_id": invitation_id, "expires_at": expires_at}

    def revoke_invitation(self, ctx: CommandContext, invitation_id: str) -> dict[str, Any]:
        self.require(ctx, "members:invite")
        self._require_paid_plan()
        invitation = self._invitation(invitation_id)
        if invitation.status != "pending":
            raise Conflict(f"invitation {invitation_id} is {invitation.status}")
        self._trigger(ev.InvitationRevoked, ctx, invitation_id=invitation_id, email=invitation.email)
        return {"invitation_id": invitation_id}

    def accept_invitation(
        self,
        ctx: CommandContext,
        invitation_id: str,
        user_id: str,
        email: str | None,
        token_matches: Callable[[str, datetime], bool],
    ) -> dict[str, Any]:
        if ctx.actor.type != "user" or ctx.actor.id != user_id:
            raise PermissionDenied("only the invited user may accept an invitation")
        invitation = self._invitation(invitation_id)
        if not token_matches(invitation_id, invitation.expires_at):
            raise InvalidToken("the invitation token does not match")
        if email is not None and email != invitation.email:
            raise PermissionDenied("the invitation was sent to another address", reason="email_mismatch")
        if invitation.status == "revoked":
            raise Expired(f"invitation {invitation_id} was revoked")
        if invitation.status == "accepted":
            raise Conflict(f"invitation {invitation_id} was already accepted")
        if invitation.has_lapsed(ctx.now):
            raise Expired(f"invitation {invitation_id} expired at {invitation.expires_at.isoformat()}")
        if not self.still_vouches_for(invitation, ctx.now):
            raise Expired(
                "whoever sent the invitation may no longer invite to its role; ask for a new one", reason="inviter_lost_rights"
            )
        if user_id in self.members:
            raise Conflict(f"user {user_id} is already a member")
        if invitation.email in self.member_emails:
            raise Conflict("a member with that email already belongs to the organization")
        self._trigger(
            ev.InvitationAccepted,
            ctx,
            invitation_id=invitation_id,
            user_id=user_id,
            email=invitation.email,
            role=invitation.role,
            projects=listed(invitation.projects),
        )
        return {"user_id": user_id, "role": invitation.role}

    def change_role(
        self, ctx: CommandContext, user_id: str, role: str, projects: list[str] | None = None, keep_scope: bool = True
    ) -> dict[str, Any]:
        """`keep_scope`: the member keeps their project scope; otherwise it becomes `projects` (None:
        every project). The role and the scope together must lie within the assigner's rights."""
        self.require(ctx, "members:manage")
        member = self.members.get(user_id)
        if role == "owner" or (member is not None and member.role == "owner"):
            self.require(ctx, "owners:manage")
        if not keep_scope and projects is not None:
            self._require_scopes_plan()
        self._require_assignable(ctx, role)
        member = self._member(user_id)
        self._require_outranks(ctx, member)
        scope = member.projects if keep_scope else scope_of(projects)
        self._require_scope_within_actor(ctx, scope, "the member's scope")
        result = {"user_id": user_id, "role": role, "projects": listed(scope)}
        if member.role == role and member.projects == scope:
            return result
        if member.role == "owner" and role != "owner":
            self._require_another_owner(user_id)
        self._trigger(
            ev.RoleChanged,
            ctx,
            user_id=user_id,
            email=member.email,
            from_role=member.role,
            to_role=role,
            from_projects=listed(member.projects),
            projects=listed(scope),
        )
        return result

    def remove_member(self, ctx: CommandContext, user_id: str, keep_api_keys: list[str]) -> dict[str, Any]:
        leaving_by_choice = ctx.actor.type == "user" and ctx.actor.id == user_id
        if not leaving_by_choice:
            self.require(ctx, "members:manage")
            leaving = self.members.get(user_id)
            if leaving is not None and leaving.role == "owner":
                self.require(ctx, "owners:manage")
        else:
            self.require_scim_plan(ctx)
        member = self._member(user_id)
        if not leaving_by_choice:
            self._require_outranks(ctx, member)
        if member.role == "owner":
            self._require_another_owner(user_id)
        granted = self._keys_granted_by(user_id)
        kept = sorted(granted & set(keep_api_keys))
        if kept and leaving_by_choice:
            raise Conflict("keys are kept by someone who stays; whoever leaves takes theirs along", kept=kept)
        owned = [key_id for key_id in kept if self.api_keys[key_id].owner_user_id == user_id]
        if owned:
            raise Conflict("a key the member owns cannot outlive them; only keys they created can be kept", owned=owned)
        revoked = sorted(granted - set(kept))
        sent = sorted(
            i.invitation_id
            for i in self.invitations.values()
            if i.status == "pending" and i.invited_by is not None and _sent_by(i.invited_by, user_id, revoked)
        )
        self._trigger(ev.MemberRemoved, ctx, user_id=user_id, email=member.email, role=member.role, kept_api_keys=kept)
        for key_id in revoked:
            self._trigger(ev.ApiKeyRevoked, ctx, key_id=key_id, reason="member_removed")
        for invitation_id in sent:
            self._trigger(ev.InvitationRevoked, ctx, invitation_id=invitation_id, email=self.invitations[invitation_id].email)
        return {"user_id": user_id, "revoked_api_keys": revoked, "revoked_invitations": sent}

    def add_seats(self, ctx: CommandContext, quantity: int, accept_charge_cents: int) -> dict[str, Any]:
        self.require(ctx, "billing:manage")
        self._require_paid_plan()
        charge = self._buy_seats(ctx, quantity, accept_charge_cents)
        return {"seats_total": self.seats_total, "charge_cents": charge}

    def remove_seats(self, ctx: CommandContext, quantity: int) -> dict[str, Any]:
        self.require(ctx, "billing:manage")
        self._require_paid_plan()
        if quantity > self.seats_purchased:
            raise Conflict(f"only {self.seats_purchased} purchased seats can be removed", seats_purchased=self.seats_purchased)
        if self.seats_total - quantity < self.seats_used(ctx.now):
            raise Conflict("those seats are still in use", **self.seat_quote(ctx.now))
        start, end = self.billing_period(ctx.now)
        credit = pricing.prorate(self.unit_price_cents, quantity, start, end, ctx.now)
        self._trigger(
            ev.SeatRemoved,
            ctx,
            quantity=quantity,
            seats_total=self.seats_total - quantity,
            unit_price_cents=self.unit_price_cents,
            credit_cents=credit,
            billing_period_start=start,
            billing_period_end=end,
        )
        return {"seats_total": self.seats_total, "credit_cents": credit}

    def create_api_key(
        self,
        ctx: CommandContext,
        name: str,
        permissions: list[str],
        owner_user_id: str | None,
        expires_at: datetime | None,
        key: NewApiKey,
        projects: list[str] | None = None,
    ) -> dict[str, Any]:
        for_themself = ctx.actor.type == "user" and owner_user_id == ctx.actor.id
        self.require(ctx, "api_keys:own" if for_themself else "api_keys:manage")
        lacking = sorted(set(permissions) - self.permissions_of(ctx.actor, ctx.now))
        if lacking:
            raise PermissionDenied(f"a key cannot hold permissions its creator lacks: {', '.join(lacking)}", missing=lacking)
        scope = scope_of(projects)
        self._require_scope_within_actor(ctx, scope, "a key")
        if scope is not None:
            self._require_scopes_plan()
        if owner_user_id is not None:
            self._member(owner_user_id)
        if expires_at is not None and expires_at <= ctx.now:
            raise Invalid("expires_at must lie in the future", field="expires_at")
        if sum(1 for k in self.api_keys.values() if not k.revoked) >= MAX_UNREVOKED_KEYS:
            raise Conflict(
                f"the organization holds {MAX_UNREVOKED_KEYS} unrevoked keys, the most it may; revoke some first",
                reason="key_limit_reached",
            )
        self._trigger(
            ev.ApiKeyCreated,
            ctx,
            key_id=key.key_id,
            name=name,
            prefix=key.prefix,
            owner_user_id=owner_user_id,
            permissions=sorted(set(permissions)),
            expires_at=expires_at,
            secret_hash=key.secret_hash,
            created_by={"type": ctx.actor.type, "id": ctx.actor.id},
            projects=listed(scope),
        )
        return {"key_id": key.key_id, "prefix": key.prefix, "projects": listed(scope)}

    def revoke_api_key(self, ctx: CommandContext, key_id: str) -> dict[str, Any]:
        key = self.api_keys.get(key_id)
        owns_it = key is not None and key.owner_user_id is not None and ctx.actor == Actor(type="user", id=key.owner_user_id)
        if owns_it:
            self.require_scim_plan(ctx)
        else:
            self.require(ctx, "api_keys:manage")
        if key is None:
            raise NotFound(f"API key {key_id} does not exist")
        if key.revoked:
            raise Conflict(f"API key {key_id} is already revoked")
        self._trigger(ev.ApiKeyRevoked, ctx, key_id=key_id, reason="revoked")
        return {"key_id": key_id}

    def define_role(
        self, ctx: CommandContext, role_key: str, name: str, description: str, permissions: list[str]
    ) -> dict[str, Any]:
        self.require(ctx, "org:manage")
        self._require_custom_roles_plan()
        self._require_definable(ctx, role_key, permissions)
        if role_key in self.roles:
            raise Conflict(f"role {role_key} is already defined", role_key=role_key)
        held = sorted(set(permissions))
        self._trigger(ev.RoleDefined, ctx, role_key=role_key, name=name, description=description, permissions=held)
        return {"role_key": role_key, "permissions": held}

    def update_role(
        self,
        ctx: CommandContext,
        role_key: str,
        name: str | None,
        description: str | None,
        permissions: list[str] | None,
    ) -> dict[str, Any]:
        self.require(ctx, "org:manage")
        self._require_custom_roles_plan()
        if permissions is not None:
            self._require_definable(ctx, role_key, permissions)
        before = self._custom_role(role_key)
        after = CustomRole(
            role_key,
            before.name if name is None else name,
            before.description if description is None else description,
            before.permissions if permissions is None else frozenset(permissions),
        )
        if after != before:
            self._trigger(ev.RoleUpdated, ctx, role_key=role_key, **after.described(), previous=before.described())
        return {"role_key": role_key, "permissions": sorted(after.permissions)}

    def delete_role(self, ctx: CommandContext, role_key: str) -> dict[str, Any]:
        """On any plan: a role defined on enterprise and left behind by a downgrade can still be removed."""
        self.require(ctx, "org:manage")
        role = self._custom_role(role_key)
        holders = self._custom_role_holders({role_key})
        if holders["members"] or holders["invitations"]:
            raise Conflict(f"role {role_key} is still held; give its holders another role first", **holders)
        self._trigger(ev.RoleDeleted, ctx, role_key=role_key, previous=role.described())
        return {"role_key": role_key}

    # -- helpers --------------------------------------------------------------

    def _require_scopes_plan(self) -> None:
        if self.plan == "free":
            raise PlanRequired("project scopes need a paid plan", required_plan="pro")

    def _require_scope_within_actor(self, ctx: CommandContext, scope: Scope, what: str) -> None:
        """Whoever grants a project scope holds it: a scoped actor grants only within its own projects,
        and never every project. `details.projects` lists the excess (null: every project was asked)."""
        excess = beyond(scope, self.project_scope(ctx.actor, ctx.now))
        if excess == []:
            return
        reach = "every project" if excess is None else ", ".join(excess)
        raise PermissionDenied(
            f"{what} cannot reach projects beyond its grantor's: {reach}", reason="projects_beyond_grantor", projects=excess
        )

    def _require_custom_roles_plan(self) -> None:
        if self.plan != "enterprise":
            raise PlanRequired("custom roles need the enterprise plan", required_plan="enterprise")

    def _require_definable(self, ctx: CommandContext, role_key: str, permissions: list[str]) -> None:
        """A custom role never holds more than whoever defines it (the contract already refused the
        built-in keys and the reserved permissions)."""
        beyond = sorted(set(permissions) - self.permissions_of(ctx.actor, ctx.now))
        if beyond:
            raise PermissionDenied(f"a role cannot hold permissions its definer lacks: {', '.join(beyond)}", missing=beyond)

    def _require_assignable(self, ctx: CommandContext, role: str) -> None:
        """A role, built-in or custom, is given only by whoever holds all it grants (a custom role that
        may manage members cannot make anyone an admin); a custom role is given on the enterprise
        plan, once defined. Decided once the permission checks passed, as the contract orders them."""
        if not is_builtin(role):
            self._require_custom_roles_plan()
            if role not in self.roles:
                raise Invalid(f"role {role} is not defined in this organization", field="role")
        beyond = sorted(self.role_permissions(role) - self._assigning_rights(ctx))
        if beyond:
            raise PermissionDenied(
                f"the role {role} grants permissions its assigner lacks: {', '.join(beyond)}",
                reason="role_beyond_assigner",
                missing=beyond,
            )

    def _assigning_rights(self, ctx: CommandContext) -> frozenset[str]:
        """What an actor may hand out or act on through roles. SCIM provisions whatever role the
        organization's identity provider says (an owner configured it), so it is bounded by its
        commands' permissions alone; everyone else by what they hold now."""
        return _ALL_PERMISSIONS if ctx.actor.type == "scim" else self.permissions_of(ctx.actor, ctx.now)

    def _require_outranks(self, ctx: CommandContext, member: Member) -> None:
        """Whoever changes or removes a member holds everything the member's role grants: a custom
        role that manages members cannot demote or remove an admin."""
        beyond = sorted(self.role_permissions(member.role) - self._assigning_rights(ctx))
        if beyond:
            raise PermissionDenied(
                f"{member.user_id}'s role {member.role} grants permissions the actor lacks: {', '.join(beyond)}",
                reason="member_beyond_actor",
                missing=beyond,
            )

    def _custom_role(self, role_key: str) -> CustomRole:
        try:
            return self.roles[role_key]
        except KeyError:
            raise NotFound(f"role {role_key} is not defined") from None

    def _custom_role_holders(self, keys: set[str] | None = None) -> dict[str, list[str]]:
        """Members and open invitations (pending, lapsed or not: a resend revives them) holding a
        custom role (one of `keys`, when given)."""

        def held(role: str) -> bool:
            return not is_builtin(role) and (keys is None or role in keys)

        members = sorted(uid for uid, m in self.members.items() if held(m.role))
        invitations = sorted(iid for iid, i in self.invitations.items() if i.status == "pending" and held(i.role))
        roles = sorted({self.members[u].role for u in members} | {self.invitations[i].role for i in invitations})
        return {"roles": roles, "members": members, "invitations": invitations}

    def _keys_granted_by(self, user_id: str) -> set[str]:
        """Every unrevoked key the member owns or created, and the keys those keys created, and so on."""
        granted = {
            k.key_id for k in self.api_keys.values() if k.owner_user_id == user_id or k.created_by == ActorRef("user", user_id)
        }
        while True:
            more = {
                k.key_id
                for k in self.api_keys.values()
                if k.created_by is not None and k.created_by.type == "api_key" and k.created_by.id in granted
            } - granted
            if not more:
                break
            granted |= more
        return {key_id for key_id in granted if not self.api_keys[key_id].revoked}

    def _require_paid_plan(self) -> None:
        if self.plan == "free":
            raise PlanRequired("the free plan has a single seat; upgrade to invite teammates", required_plan="pro")

    def _require_email_free(self, email: str, now: datetime, besides: str | None = None) -> None:
        """One person, one seat: no member with the address, and no other pending invitation for it."""
        if email in self.member_emails:
            raise Conflict("that address already belongs to a member")
        open_ids = self.open_by_email.get(email, ())
        if any(i != besides and self.invitations[i].is_pending(now) for i in open_ids):
            raise Conflict("that address already has a pending invitation")

    def _require_another_owner(self, user_id: str) -> None:
        if not any(m.role == "owner" for uid, m in self.members.items() if uid != user_id):
            raise LastOwner("the organization must keep at least one owner")

    def _member(self, user_id: str) -> Member:
        try:
            return self.members[user_id]
        except KeyError:
            raise NotFound(f"user {user_id} is not a member") from None

    def _invitation(self, invitation_id: str) -> Invitation:
        try:
            return self.invitations[invitation_id]
        except KeyError:
            raise NotFound(f"invitation {invitation_id} does not exist") from None

    def _trigger(self, event_class: type[ev.OrganizationEvent], ctx: CommandContext, **data: Any) -> None:
        self.trigger_event(event_class, timestamp=ctx.now, **_provenance(ctx, self.org_id), **data)


def indexes_of(members: dict[str, Member], invitations: dict[str, Invitation]) -> dict[str, Any]:
    """The indexes an organization keeps, derived from its members and invitations."""
    open_by_email: dict[str, list[str]] = {}
    for invitation in invitations.values():
        if invitation.status == "pending":
            open_by_email.setdefault(invitation.email, []).append(invitation.invitation_id)
    return {
        "member_emails": {member.email: user_id for user_id, member in members.items()},
        "open_expiries": sorted(i.expires_at for i in invitations.values() if i.status == "pending"),
        "open_by_email": open_by_email,
    }


def _sent_by(inviter: ActorRef, user_id: str, revoked_keys: list[str]) -> bool:
    """Sent by the member leaving, or by one of the keys leaving with them."""
    return inviter == ActorRef("user", user_id) or (inviter.type == "api_key" and inviter.id in revoked_keys)


def require_creator(actor: Actor, owner_user_id: str) -> None:
    if actor.type != "system" and not (actor.type == "user" and actor.id == owner_user_id):
        raise PermissionDenied("only the platform or the future owner may create an organization")


def _provenance(ctx: CommandContext, org_id: str) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "event_id": ctx.new_id("evt"),
        "actor": {"type": ctx.actor.type, "id": ctx.actor.id},
        "command_id": ctx.command_id,
        "correlation_id": ctx.correlation_id,
    }
