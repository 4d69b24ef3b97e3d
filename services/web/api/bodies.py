"""Request bodies of the HTTP API, validated with the contract's own field types."""

from __future__ import annotations

import msgspec

from shared.contract.commands import KeyPermissions, Token
from shared.contract.common import (
    Cents,
    EmailText,
    Identifier,
    NonEmptyText,
    Plan,
    ProjectScope,
    Quantity,
    Role,
    UtcTime,
    require_distinct_projects,
)


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RoleChange(Body, frozen=True, kw_only=True):
    """`projects` narrows the member's project scope, `every_project: true` widens it to all; with
    neither it stays as it is. `projects: null` is refused, as on the bus."""

    role: Role
    projects: ProjectScope | msgspec.UnsetType = msgspec.UNSET
    every_project: bool = False

    def __post_init__(self) -> None:
        if self.every_project and self.projects is not msgspec.UNSET:
            raise ValueError("give `projects` or `every_project: true`, not both")
        require_distinct_projects(None if self.projects is msgspec.UNSET else self.projects)


class NewInvitation(Body, frozen=True, kw_only=True):
    email: EmailText
    role: Role
    accept_charge_cents: Cents | None = None
    projects: ProjectScope | None = None  # the member's project scope once joined; absent: every project

    def __post_init__(self) -> None:
        require_distinct_projects(self.projects)


class Acceptance(Body, frozen=True, kw_only=True):
    token: Token


class SeatPurchase(Body, frozen=True, kw_only=True):
    quantity: Quantity
    accept_charge_cents: Cents


class SeatRelease(Body, frozen=True, kw_only=True):
    quantity: Quantity


class NewApiKey(Body, frozen=True, kw_only=True):
    name: NonEmptyText
    permissions: KeyPermissions
    owner_user_id: Identifier | None = None
    expires_at: UtcTime | None = None
    projects: ProjectScope | None = None  # absent: every project (within the creator's scope)

    def __post_init__(self) -> None:
        require_distinct_projects(self.projects)


class PlanChange(Body, frozen=True, kw_only=True):
    plan: Plan
