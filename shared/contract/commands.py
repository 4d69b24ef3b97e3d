"""Commands accepted on `membership.cmd.<name>`, decoded strictly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from .common import (
    RESERVED_PERMISSIONS,
    ROLES,
    Actor,
    BoundedKey,
    Cents,
    Description,
    EmailText,
    Identifier,
    NonEmptyText,
    Permission,
    Plan,
    ProjectScope,
    Quantity,
    Role,
    RoleKey,
    UtcTime,
    as_utc,
    normalize_email,
    require_distinct_projects,
    whole,
)

CommandId = BoundedKey
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512, pattern=whole("[A-Za-z0-9_.~-]+"))]
MAX_KEPT_KEYS = 1000


class Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    command_id: CommandId
    org_id: Identifier
    actor: Actor
    correlation_id: CommandId | None = None


def _normalized_email(command: msgspec.Struct, field: str = "email") -> None:
    msgspec.structs.force_setattr(command, field, normalize_email(getattr(command, field)))


class NewOwner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: Identifier
    email: EmailText

    def __post_init__(self) -> None:
        _normalized_email(self)


class CreateOrganization(Command, frozen=True, kw_only=True):
    org_id: Identifier | None = None  # type: ignore[assignment]
    name: NonEmptyText
    plan: Plan
    owner: NewOwner


class ChangePlan(Command, frozen=True, kw_only=True):
    plan: Plan


class InviteMember(Command, frozen=True, kw_only=True):
    email: EmailText
    role: Role
    accept_charge_cents: Cents | None = None
    projects: ProjectScope | None = None  # the member's project scope once joined; absent: every project (v1.4)

    def __post_init__(self) -> None:
        _normalized_email(self)
        require_distinct_projects(self.projects)


class ResendInvitation(Command, frozen=True, kw_only=True):
    invitation_id: Identifier


class RevokeInvitation(Command, frozen=True, kw_only=True):
    invitation_id: Identifier


class AcceptInvitation(Command, frozen=True, kw_only=True):
    invitation_id: Identifier
    token: Token
    user_id: Identifier
    email: EmailText | None = None  # the accepting person's verified address; must be the invitation's

    def __post_init__(self) -> None:
        if self.email is not None:
            _normalized_email(self)


class ChangeRole(Command, frozen=True, kw_only=True):
    """`projects` narrows the member's scope to those projects; `every_project: true` widens it to all;
    with neither, the scope stays as it is (a role change alone keeps it). `projects: null` is refused:
    many clients drop or add nulls, so "every project" is said explicitly (v1.4)."""

    user_id: Identifier
    role: Role
    projects: ProjectScope | msgspec.UnsetType = msgspec.UNSET
    every_project: bool = False

    def __post_init__(self) -> None:
        if self.every_project and self.projects is not msgspec.UNSET:
            raise ValueError("give `projects` or `every_project: true`, not both (at `$.every_project`)")
        require_distinct_projects(self.new_scope())

    def new_scope(self) -> list[str] | None:
        """The scope asked for: a list, None for every project; `keeps_scope()` when neither was given."""
        return None if isinstance(self.projects, msgspec.UnsetType) else self.projects

    def keeps_scope(self) -> bool:
        return self.projects is msgspec.UNSET and not self.every_project


class RemoveMember(Command, frozen=True, kw_only=True):
    user_id: Identifier
    keep_api_keys: Annotated[list[Identifier], msgspec.Meta(max_length=MAX_KEPT_KEYS)] = []


class AddSeats(Command, frozen=True, kw_only=True):
    quantity: Quantity
    accept_charge_cents: Cents


class RemoveSeats(Command, frozen=True, kw_only=True):
    quantity: Quantity


KeyPermissions = Annotated[list[Permission], msgspec.Meta(min_length=1, max_length=64)]


class CreateApiKey(Command, frozen=True, kw_only=True):
    name: NonEmptyText
    permissions: KeyPermissions
    owner_user_id: Identifier | None = None
    expires_at: UtcTime | None = None
    projects: ProjectScope | None = None  # absent: every project; within the creator's scope (v1.4)

    def __post_init__(self) -> None:
        require_distinct_projects(self.projects)
        if self.expires_at is not None:
            msgspec.structs.force_setattr(self, "expires_at", as_utc(self.expires_at))


class RevokeApiKey(Command, frozen=True, kw_only=True):
    key_id: Identifier


RolePermissions = Annotated[list[Permission], msgspec.Meta(max_length=64)]


def _custom_role_rules(role_key: str, permissions: Sequence[str] | None) -> None:
    """A custom role is never a built-in one, and never holds what would let it make owners or define roles."""
    if role_key in ROLES:
        raise ValueError(f"role_key {role_key} is a built-in role; choose another key (at `$.role_key`)")
    reserved = sorted(set(permissions or ()) & RESERVED_PERMISSIONS)
    if reserved:
        raise ValueError(f"a custom role may not hold {', '.join(reserved)} (at `$.permissions`)")


class DefineRole(Command, frozen=True, kw_only=True):
    role_key: RoleKey
    name: NonEmptyText
    description: Description = ""
    permissions: RolePermissions

    def __post_init__(self) -> None:
        _custom_role_rules(self.role_key, self.permissions)


class UpdateRole(Command, frozen=True, kw_only=True):
    """What is absent stays as it was."""

    role_key: RoleKey
    name: NonEmptyText | None = None
    description: Description | None = None
    permissions: RolePermissions | None = None

    def __post_init__(self) -> None:
        _custom_role_rules(self.role_key, self.permissions)


class DeleteRole(Command, frozen=True, kw_only=True):
    role_key: RoleKey

    def __post_init__(self) -> None:
        _custom_role_rules(self.role_key, None)


COMMANDS: dict[str, type[Command]] = {
    "create_organization": CreateOrganization,
    "change_plan": ChangePlan,
    "invite_member": InviteMember,
    "resend_invitation": ResendInvitation,
    "revoke_invitation": RevokeInvitation,
    "accept_invitation": AcceptInvitation,
    "change_role": ChangeRole,
    "remove_member": RemoveMember,
    "add_seats": AddSeats,
    "remove_seats": RemoveSeats,
    "create_api_key": CreateApiKey,
    "revoke_api_key": RevokeApiKey,
    "define_role": DefineRole,
    "update_role": UpdateRole,
    "delete_role": DeleteRole,
}
