"""Queries on `<service>.query.<name>` and the shapes of their results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from .common import (
    FORBIDDEN_IN_TEXT,
    MAX_EMAIL_LENGTH,
    SAFE_TEXT,
    BoundedKey,
    Identifier,
    Permission,
    Plan,
    ProjectId,
    Role,
    UtcTime,
    whole,
)

ApiKeySecret = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Cursor = Annotated[str, msgspec.Meta(max_length=512)]
PageCursor = Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=whole("[A-Za-z0-9_=-]+"))]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1000)]
DEFAULT_LIMIT = 100
# Any id an audit entry's targets carry: ids, role keys, and the addresses of invitation and member
# entries (ASCII as membership stores them, so 254 characters are 254 octets). One token: no
# whitespace and no character text may not hold; bounded.
TARGET_ID_PATTERN = whole(f"[^\\s{FORBIDDEN_IN_TEXT}]{{1,{MAX_EMAIL_LENGTH}}}")
TargetId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EMAIL_LENGTH, pattern=TARGET_ID_PATTERN)]


class Query(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Health(Query, frozen=True, kw_only=True):
    pass


class EmptyRequest(Query, frozen=True, kw_only=True):
    """The body of a request that carries nothing but its subject: `{}` (an operator's rebuild,
    renewal run or purge, a projection's status)."""


class OrgQuery(Query, frozen=True, kw_only=True):
    org_id: Identifier


class GetOrganization(OrgQuery, frozen=True, kw_only=True):
    pass


class SeatQuoteQuery(OrgQuery, frozen=True, kw_only=True):
    pass


class PagedOrgQuery(OrgQuery, frozen=True, kw_only=True):
    limit: Limit = DEFAULT_LIMIT
    cursor: PageCursor | None = None


class MembersQuery(PagedOrgQuery, frozen=True, kw_only=True):
    """`membership.query.members`: oldest member first."""


class InvitationsQuery(PagedOrgQuery, frozen=True, kw_only=True):
    """`membership.query.invitations`: oldest first, optionally of one status."""

    status: Literal["pending", "accepted", "revoked", "expired"] | None = None


class InvitationLinkQuery(Query, frozen=True, kw_only=True):
    """`membership.query.invitation`: what the page an invitation link opens shows (v1.1)."""

    invitation_id: Identifier
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=whole("[A-Za-z0-9_.~-]+"))]


class UserOrgsQuery(Query, frozen=True, kw_only=True):
    """`membership.query.user_orgs`: the organizations a user is a member of, the earliest joined first (v1.2)."""

    user_id: Identifier
    limit: Limit = DEFAULT_LIMIT
    cursor: PageCursor | None = None


class ApiKeysQuery(PagedOrgQuery, frozen=True, kw_only=True):
    """`membership.query.api_keys`: oldest first; never a secret or its hash."""


class RolesQuery(PagedOrgQuery, frozen=True, kw_only=True):
    """`membership.query.roles`: the organization's custom roles, by key (v1.4)."""


class Authorize(Query, frozen=True, kw_only=True):
    permission: Permission
    api_key: ApiKeySecret | None = None
    org_id: Identifier | None = None
    user_id: Identifier | None = None
    project_id: ProjectId | None = None  # v1.4: the project a project-level permission is asked for

    def __post_init__(self) -> None:
        by_key = self.api_key is not None
        by_user = self.org_id is not None and self.user_id is not None
        if by_key == by_user:
            raise ValueError("give either `api_key`, or `org_id` and `user_id`")


class ChargesQuery(OrgQuery, frozen=True, kw_only=True):
    """Oldest first, by (`occurred_at`, `charge_id`); `next_cursor` is null on the last page."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


class UpcomingInvoiceQuery(OrgQuery, frozen=True, kw_only=True):
    pass


class InvoicesQuery(OrgQuery, frozen=True, kw_only=True):
    """Oldest period first; `limit` counts periods."""

    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


class AuditSearch(OrgQuery, frozen=True, kw_only=True):
    from_: UtcTime | None = msgspec.field(default=None, name="from")
    to: UtcTime | None = None
    action: Annotated[str, msgspec.Meta(max_length=64, pattern=SAFE_TEXT)] | None = None
    actor_id: Identifier | None = None
    target_id: TargetId | None = None
    cursor: Cursor | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class AuditVerify(OrgQuery, frozen=True, kw_only=True):
    pass


class AuditGetEvent(Query, frozen=True, kw_only=True):
    event_id: BoundedKey


class AuditExport(OrgQuery, frozen=True, kw_only=True):
    from_: UtcTime | None = msgspec.field(default=None, name="from")
    to: UtcTime | None = None
    format: Literal["ndjson", "csv"] = "ndjson"
    cursor: Cursor | None = None


class DeliveriesQuery(OrgQuery, frozen=True, kw_only=True):
    """`notifier.query.deliveries`: one page of the delivery log, oldest first; pass the reply's
    `next_cursor` back for the next page (null on the last one)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    cursor: Cursor | None = None


class RetryDeadLetter(Query, frozen=True, kw_only=True):
    """`<service>.admin.retry_dead_letter`: apply a parked message again, by its dead-letter sequence."""

    sequence: Annotated[int, msgspec.Meta(ge=1)]


# Results


class SeatQuote(msgspec.Struct, frozen=True, kw_only=True):
    seats_included: int
    seats_purchased: int
    seats_total: int
    seats_used: int
    seats_available: int
    unit_price_cents: int
    next_seat_charge_cents: int
    billing_period_start: datetime
    billing_period_end: datetime
    quoted_at: datetime


class MemberView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str
    role: Role
    joined_at: datetime
    projects: list[str] | None = None  # the member's project scope (v1.4); null: every project


class InvitationView(msgspec.Struct, frozen=True, kw_only=True):
    invitation_id: str
    email: str
    role: Role
    expires_at: datetime
    status: Literal["pending", "accepted", "revoked", "expired"]
    projects: list[str] | None = None  # the scope the member gets on accepting (v1.4); null: every project


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["user", "api_key", "scim", "system"]
    id: str


class ApiKeyView(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    name: str
    prefix: str
    owner_user_id: str | None
    permissions: list[Permission]
    expires_at: datetime | None
    created_at: datetime
    created_by: Principal | None
    status: Literal[
        "live", "inactive", "revoked", "expired"
    ]  # inactive: grants nothing now (its owner left, its grantor lost the rights)
    projects: list[str] | None = None  # the key's own project scope (v1.4); null: every project


class OrganizationView(msgspec.Struct, frozen=True, kw_only=True):
    """The first 100 members and invitations; the cursors continue them on `members` and `invitations`."""

    org_id: str
    name: str
    plan: Plan
    members: list[MemberView]
    invitations: list[InvitationView]
    seats: SeatQuote
    members_next_cursor: str | None
    invitations_next_cursor: str | None


class InvitationLinkView(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    org_name: str
    email: str
    role: Role
    invited_by: Principal | None
    expires_at: datetime
    status: Literal["pending", "accepted", "revoked", "expired"]


class UserOrgView(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    org_name: str
    role: Role
    joined_at: datetime


class UserOrgsPage(msgspec.Struct, frozen=True, kw_only=True):
    orgs: list[UserOrgView]
    next_cursor: str | None


class MembersPage(msgspec.Struct, frozen=True, kw_only=True):
    members: list[MemberView]
    next_cursor: str | None


class InvitationsPage(msgspec.Struct, frozen=True, kw_only=True):
    invitations: list[InvitationView]
    next_cursor: str | None


class ApiKeysPage(msgspec.Struct, frozen=True, kw_only=True):
    api_keys: list[ApiKeyView]
    next_cursor: str | None


class RoleView(msgspec.Struct, frozen=True, kw_only=True):
    role_key: str
    name: str
    description: str
    permissions: list[Permission]


class RolesPage(msgspec.Struct, frozen=True, kw_only=True):
    roles: list[RoleView]
    next_cursor: str | None


class AuthorizeResult(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    org_id: str | None
    principal: Principal | None
    role: Role | None
    permissions: list[Permission]
    projects: list[str] | None = None  # the principal's project scope (v1.4); null: every project


class HealthResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    service: str
    version: str
