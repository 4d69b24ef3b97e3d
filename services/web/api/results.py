"""The shapes of successful bodies that the contract names in prose but has no Struct for: the
commands' results, billing's and audit's answers, and `/v1/me`. They document the API (and
schemathesis holds every response to them); the edge passes the services' results through as given."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from shared.contract.common import Permission, Plan, Role
from shared.contract.queries import Principal


class Result(msgspec.Struct, frozen=True, kw_only=True):
    pass


class PlanChanged(Result, frozen=True, kw_only=True):
    plan: Plan


class InvitationSent(Result, frozen=True, kw_only=True):
    invitation_id: str
    expires_at: datetime
    seat_charge_cents: int


class InvitationResent(Result, frozen=True, kw_only=True):
    invitation_id: str
    expires_at: datetime


class InvitationRevoked(Result, frozen=True, kw_only=True):
    invitation_id: str


class MemberRole(Result, frozen=True, kw_only=True):
    """`change_role`'s and `accept_invitation`'s result."""

    user_id: str
    role: Role


class MemberRemoved(Result, frozen=True, kw_only=True):
    user_id: str
    revoked_api_keys: list[str]
    revoked_invitations: list[str]


class SeatsAdded(Result, frozen=True, kw_only=True):
    seats_total: int
    charge_cents: int


class SeatsReleased(Result, frozen=True, kw_only=True):
    seats_total: int
    credit_cents: int


class ApiKeyCreated(Result, frozen=True, kw_only=True):
    key_id: str
    prefix: str
    secret: str  # shown once: this response is the only place it ever appears


class ApiKeyRevoked(Result, frozen=True, kw_only=True):
    key_id: str


class Charge(Result, frozen=True, kw_only=True):
    charge_id: str
    org_id: str
    kind: Literal["seat_proration", "seat_credit", "seat_renewal"]
    quantity: int
    unit_price_cents: int
    amount_cents: int  # credits negative
    billing_period_start: datetime
    billing_period_end: datetime
    occurred_at: datetime
    event_id: str | None


class ChargesPage(Result, frozen=True, kw_only=True):
    charges: list[Charge]
    next_cursor: str | None


class UpcomingInvoice(Result, frozen=True, kw_only=True):
    billing_period_start: datetime
    billing_period_end: datetime
    issued_at: datetime
    lines: list[Charge]
    line_count: int
    lines_complete: bool
    total_cents: int


class AuditEntry(Result, frozen=True, kw_only=True):
    entry_id: str
    org_id: str
    seq: int
    occurred_at: datetime
    action: str
    actor: dict[str, Any]
    targets: list[dict[str, Any]]
    metadata: dict[str, Any]
    event_id: str
    command_id: str | None
    correlation_id: str | None
    prev_hash: str
    hash: str


class AuditEntriesPage(Result, frozen=True, kw_only=True):
    entries: list[AuditEntry]
    next_cursor: str | None


class AuditVerdict(Result, frozen=True, kw_only=True):
    ok: bool
    entries_checked: int
    head_hash: str
    missing: list[list[int]]
    missing_events: int
    pending: int
    missing_truncated: bool | None = None
    first_bad_seq: int | None = None
    reason: str | None = None


class OrgAccess(Result, frozen=True, kw_only=True):
    org_id: str
    org_name: str | None
    role: Role | None  # a key without an owner has none
    permissions: list[Permission]


class UserView(Result, frozen=True, kw_only=True):
    user_id: str
    email: str


class Me(Result, frozen=True, kw_only=True):
    """The caller: a key with its one organization, or a signed-in user with theirs (paged)."""

    principal: Principal
    user: UserView | None
    orgs: list[OrgAccess]
    next_cursor: str | None
