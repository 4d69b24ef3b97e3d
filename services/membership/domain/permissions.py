"""Who may do what: the role and permission matrix of the contract."""

from __future__ import annotations

from typing import cast

from shared.contract.common import BUILTIN_ROLE_PERMISSIONS, BuiltinRole, Permission

ROLE_PERMISSIONS: dict[BuiltinRole, frozenset[Permission]] = BUILTIN_ROLE_PERMISSIONS


def permissions_of(role: str) -> frozenset[Permission]:
    """A built-in role's permissions; any other role has none here (custom roles: `Organization.role_permissions`)."""
    return ROLE_PERMISSIONS.get(cast(BuiltinRole, role), frozenset())


def is_builtin(role: str) -> bool:
    return role in ROLE_PERMISSIONS
