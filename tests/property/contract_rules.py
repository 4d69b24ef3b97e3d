"""The contract's rules, written out again for the state machine's oracles.

Nothing here calls the domain's permission, seat or ledger code: each rule is restated from
docs/contract.md (v1 and the v1.1 amendments), so that comparing the two can fail.
Only `shared.pricing.prorate`, the contract's published rounding rule, is shared.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.membership.domain.organization import Organization
from shared.contract import commands as cmd
from shared.contract.events import Envelope
from shared.pricing import prorate

# -- roles, seats, idempotency ---------------------------------------------------------

ALL_PERMISSIONS = frozenset(
    {
        "org:read", "org:manage", "billing:read", "billing:manage", "members:read", "members:invite",
        "members:manage", "owners:manage", "projects:read", "projects:use", "projects:manage",
        "api_keys:read", "api_keys:own", "api_keys:manage", "audit:read", "gateway:use",
    }
)  # fmt: skip
_EVERYONE = frozenset(
    {"org:read", "members:read", "projects:read", "projects:use", "api_keys:read", "api_keys:own", "gateway:use"}
)
ROLE_PERMISSIONS = {
    "owner": ALL_PERMISSIONS,
    "admin": _EVERYONE | {"members:invite", "members:manage", "projects:manage", "api_keys:manage", "audit:read"},
    "developer": _EVERYONE,
}
INCLUDED_SEATS = {"free": 1, "pro": 3, "enterprise": 3}
COMMAND_RETENTION = timedelta(hours=24)  # the documented default window of command records
NOT_REMEMBERED = frozenset({"validation_error", "internal"})
NOTHING: frozenset[str] = frozenset()


RESERVED_FOR_BUILT_IN_ROLES = frozenset({"owners:manage", "org:manage"})


def role_bound(org: Organization, role: str) -> frozenset[str]:
    """A built-in role's permissions from the contract's table; a custom role's as the organization's
    `RoleDefined`/`RoleUpdated` events last defined it, never the reserved ones; nothing for an undefined key."""
    if role in ROLE_PERMISSIONS:
        return ROLE_PERMISSIONS[role]
    custom = org.roles.get(role)
    return frozenset(custom.permissions) - RESERVED_FOR_BUILT_IN_ROLES if custom is not None else NOTHING


def seats_used(org: Organization, now: datetime) -> int:
    """Members, plus pending invitations that have not expired."""
    pending = [i for i in org.invitations.values() if i.status == "pending" and now < i.expires_at]
    return len(org.members) + len(pending)


# The contract: SCIM provisions members (and owners), nothing else.
SCIM_RIGHTS = frozenset({"org:read", "members:read", "members:invite", "members:manage", "owners:manage"})


def key_bound(org: Organization, key_id: str, now: datetime, seen: frozenset[str] = frozenset()) -> frozenset[str]:
    """The most a key may do now: its own permissions while live (not revoked, not expired, owner
    still a member), within its owner's role, its creator's role while the creator is a member,
    and what its creating key may do now. An upper bound: the service may grant less."""
    key = org.api_keys.get(key_id)
    if key is None or key.revoked or key_id in seen or (key.expires_at is not None and now >= key.expires_at):
        return NOTHING
    bound = frozenset(key.permissions)
    if key.owner_user_id is not None:
        owner = org.members.get(key.owner_user_id)
        bound &= role_bound(org, owner.role) if owner else NOTHING
    creator = key.created_by
    if creator is not None and creator.type == "user":
        bound &= role_bound(org, org.members[creator.id].role) if creator.id in org.members else NOTHING
    elif creator is not None and creator.type == "api_key":
        bound &= key_bound(org, creator.id, now, seen | {key_id})
    elif creator is not None and creator.type == "scim":
        bound &= SCIM_RIGHTS
    return bound


def key_scope_bound(org: Organization, key_id: str, seen: frozenset[str] = frozenset()) -> frozenset[str] | None:
    """The widest project scope a key may reach now (None: every project): its own, within its
    owner's current scope and its creator's (a removed creator reaches none). An upper bound."""
    key = org.api_keys.get(key_id)
    if key is None or key_id in seen:
        return NOTHING
    bound = None if key.projects is None else frozenset(key.projects)
    if key.owner_user_id is not None:
        owner = org.members.get(key.owner_user_id)
        bound = _both(bound, owner.projects if owner else NOTHING)
    creator = key.created_by
    if creator is not None and creator.type == "user":
        member = org.members.get(creator.id)
        bound = _both(bound, member.projects if member else NOTHING)
    elif creator is not None and creator.type == "api_key":
        bound = _both(bound, key_scope_bound(org, creator.id, seen | {key_id}))
    return bound


def _both(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None or b is None:
        return b if a is None else a
    return a & b


def actor_bound(org: Organization, actor: dict[str, str], now: datetime) -> frozenset[str]:
    """The most an actor may do now (SCIM is bounded by the plan, checked apart)."""
    if actor["type"] == "system":
        return ALL_PERMISSIONS
    if actor["type"] == "scim":
        return SCIM_RIGHTS
    if actor["type"] == "user":
        member = org.members.get(actor["id"])
        return role_bound(org, member.role) if member else NOTHING
    return key_bound(org, actor["id"], now)


def unauthorized_success(
    name: str, command: cmd.Command, before: Organization, now: datetime, event_types: list[str]
) -> str | None:
    """Why a command that succeeded should not have (None when the contract allows it).

    `before` is the organization the command was decided on."""
    actor = {"type": command.actor.type, "id": command.actor.id}
    held = actor_bound(before, actor, now)
    as_user = actor["id"] if actor["type"] == "user" else None
    if actor["type"] == "scim" and before.plan != "enterprise":
        return f"scim acted on the {before.plan} plan"
    needed: set[str] = set()
    match command:
        case cmd.CreateOrganization():
            return "create_organization succeeded on an existing organization"
        case cmd.ChangePlan() | cmd.AddSeats() | cmd.RemoveSeats():
            needed = {"billing:manage"}
        case cmd.InviteMember():
            needed = {"members:invite"}
            if command.role == "owner":
                needed.add("owners:manage")
            if "SeatAdded" in event_types:
                needed.add("billing:manage")
            why = _role_assigned_wrongly(before, command.role, held, actor)
            if why:
                return why
        case cmd.ResendInvitation() | cmd.RevokeInvitation():
            needed = {"members:invite"}
        case cmd.AcceptInvitation():
            return None if as_user == command.user_id else f"{actor} accepted an invitation for {command.user_id}"
        case cmd.ChangeRole():
            target = before.members.get(command.user_id)
            needed = {"members:manage"}
            if command.role == "owner" or (target is not None and target.role == "owner"):
                needed.add("owners:manage")
            why = _role_assigned_wrongly(before, command.role, held, actor) or _acted_above(before, target, held, actor)
            if why:
                return why
        case cmd.RemoveMember():
            if as_user == command.user_id:
                return None
            target = before.members.get(command.user_id)
            needed = {"members:manage"} | ({"owners:manage"} if target is not None and target.role == "owner" else set())
            why = _acted_above(before, target, held, actor)
            if why:
                return why
        case cmd.CreateApiKey():
            for_themself = as_user is not None and command.owner_user_id == as_user
            needed = {"api_keys:own" if for_themself else "api_keys:manage"}
            beyond = set(command.permissions) - held
            if beyond:
                return f"{actor} minted a key with {sorted(beyond)}, beyond its own permissions"
        case cmd.DefineRole() | cmd.UpdateRole() | cmd.DeleteRole():
            needed = {"org:manage"}
            if before.plan != "enterprise" and not isinstance(command, cmd.DeleteRole):
                return f"{type(command).__name__} succeeded on the {before.plan} plan"
            if command.role_key in ROLE_PERMISSIONS:
                return f"a built-in role was {type(command).__name__}"
            permissions = set(getattr(command, "permissions", None) or ())
            if permissions & RESERVED_FOR_BUILT_IN_ROLES:
                return f"a custom role was given {sorted(permissions & RESERVED_FOR_BUILT_IN_ROLES)}"
            if permissions - held:
                return f"{actor} defined a role with {sorted(permissions - held)}, beyond its own permissions"
            if isinstance(command, cmd.DeleteRole):
                holders = [m.user_id for m in before.members.values() if m.role == command.role_key]
                holders += [
                    i.invitation_id for i in before.invitations.values() if i.status == "pending" and i.role == command.role_key
                ]
                if holders:
                    return f"role {command.role_key} was deleted while {holders} held it"
        case cmd.RevokeApiKey():
            key = before.api_keys.get(command.key_id)
            if key is not None and key.owner_user_id is not None and as_user == key.owner_user_id:
                return None
            needed = {"api_keys:manage"}
    missing = needed - held
    return f"{actor} lacks {sorted(missing)}" if missing else None


def _role_assigned_wrongly(before: Organization, role: str, held: frozenset[str], actor: dict[str, str]) -> str | None:
    """A role, built-in or custom, is assigned within the assigner's permissions then (SCIM provisions
    any role); a custom one on the enterprise plan, when defined."""
    if role not in ROLE_PERMISSIONS:
        if before.plan != "enterprise":
            return f"custom role {role} assigned on the {before.plan} plan"
        if role not in before.roles:
            return f"undefined role {role} assigned"
    if actor["type"] == "scim":
        return None
    beyond = role_bound(before, role) - held
    return f"role {role} assigned by someone lacking {sorted(beyond)}" if beyond else None


def _acted_above(before: Organization, target: Any, held: frozenset[str], actor: dict[str, str]) -> str | None:
    """A member is changed or removed only by whoever holds all their role grants (SCIM excepted)."""
    if target is None or actor["type"] == "scim":
        return None
    beyond = role_bound(before, target.role) - held
    return f"{actor} acted on {target.user_id} ({target.role}) lacking {sorted(beyond)}" if beyond else None


def removal_revokes_wrongly(before: Organization, command: cmd.RemoveMember, revoked: list[str], now: datetime) -> str | None:
    """Why the keys a removal revoked are not the contract's: every live key the member owns or
    created, except those kept. Keys minted by those keys may go too, and so may expired ones;
    nothing else may, and nothing kept."""
    user_id, keep = command.user_id, set(command.keep_api_keys)
    keys = before.api_keys.values()

    def live(key: Any) -> bool:
        return not key.revoked and (key.expires_at is None or now < key.expires_at)

    granted = {
        k.key_id
        for k in keys
        if k.owner_user_id == user_id or (k.created_by and (k.created_by.type, k.created_by.id) == ("user", user_id))
    }
    must = {k for k in granted if live(before.api_keys[k])} - keep
    descendants = set(granted)
    while (
        more := {k.key_id for k in keys if k.created_by and k.created_by.type == "api_key" and k.created_by.id in descendants}
        - descendants
    ):
        descendants |= more
    may = {k for k in descendants if not before.api_keys[k].revoked} - keep
    if not must <= set(revoked):
        return f"left live keys {sorted(must - set(revoked))} of the removed member"
    if not set(revoked) <= may:
        return f"revoked keys {sorted(set(revoked) - may)} that were not the member's, or were kept, or were revoked already"
    return None


# -- the ledger, recomputed -------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Line:
    """One charge as billing must write it."""

    occurred_at: datetime
    kind: str
    quantity: int
    unit_price_cents: int
    amount_cents: int
    billing_period_start: datetime
    billing_period_end: datetime


def months_later(anchor: datetime, months: int) -> datetime:
    """Period k starts k calendar months after the anchor, on the month's last day when the day is missing."""
    index = anchor.month - 1 + months
    year, month = anchor.year + index // 12, index % 12 + 1
    return anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))


def period_containing(anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
    k = 0
    while months_later(anchor, k + 1) <= at:
        k += 1
    return months_later(anchor, k), months_later(anchor, k + 1)


@dataclass(frozen=True)
class _Position:
    after: datetime  # the instant of the event that left the organization so
    plan: str
    anchor: datetime
    seats_purchased: int


def recomputed_charges(envelopes: list[Envelope], now: datetime) -> tuple[list[Line], list[str]]:
    """Every charge the events call for up to `now`, and how the seat events' own figures differ
    from the rule: a proration or credit per seat event, and at each period start a renewal of
    the seats purchased by then (events at that very instant come after it)."""
    lines: list[Line] = []
    wrong: list[str] = []
    positions: list[_Position] = []
    plan, anchor, seats, unit = "", None, 0, 0
    for envelope in envelopes:
        data: dict[str, Any] = envelope.data
        at = envelope.occurred_at
        if envelope.event_type == "OrganizationCreated":
            plan, anchor, unit = data["plan"], _moment(data["billing_anchor"]), data["unit_price_cents"]
        elif envelope.event_type == "PlanChanged":
            plan, anchor = data["to_plan"], _moment(data["billing_anchor"])
        elif envelope.event_type in ("SeatAdded", "SeatRemoved"):
            assert anchor is not None
            start, end = period_containing(anchor, at)
            added = envelope.event_type == "SeatAdded"
            quantity = data["quantity"]
            amount = prorate(unit, quantity, start, end, at)
            recorded = data["charge_cents" if added else "credit_cents"]
            if (start, end) != (_moment(data["billing_period_start"]), _moment(data["billing_period_end"])):
                wrong.append(
                    f"{envelope.event_id}: period {data['billing_period_start']}..{data['billing_period_end']}, rule says {start}..{end}"
                )
            if recorded != amount:
                wrong.append(f"{envelope.event_id}: {recorded} cents recorded, the rule says {amount}")
            kind, signed = ("seat_proration", amount) if added else ("seat_credit", -amount)
            lines.append(Line(at, kind, quantity, unit, signed, start, end))
            seats += quantity if added else -quantity
        if anchor is not None:
            positions.append(_Position(at, plan, anchor, seats))
    for anchor in dict.fromkeys(p.anchor for p in positions):
        k = 1
        while (start := months_later(anchor, k)) <= now:
            before = [p for p in positions if p.after < start]
            position = before[-1] if before else None
            if position is not None and position.anchor == anchor and position.plan != "free" and position.seats_purchased:
                end = months_later(anchor, k + 1)
                seats_then = position.seats_purchased
                lines.append(Line(start, "seat_renewal", seats_then, unit, seats_then * unit, start, end))
            k += 1
    return sorted(lines), wrong


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
