"""Who may do what: the role and permission matrix of the contract."""

from __future__ import annotations

from typing import cast

from shared.contract.common import PERMISSIONS, BuiltinRole, Permission

_EVERYONE: frozenset[Permission] = frozenset(
    {
        "org:read",
        "members:read",
        "projects:read",
        "projects:use",
        "api_keys:read",
        "api_keys:own",
        "gateway:use",
    }
)
_MANAGERS: frozenset[Permission] = _EVERYONE | {
    "members:invite",
    "members:manage",
    "projects:manage",
    "api_keys:manage",
    "audit:read",
}

ROLE_PERMISSIONS: dict[BuiltinRole, frozenset[Permission]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": _MANAGERS,
    "developer": _EVERYONE,
}


def permissions_of(role: str) -> frozenset[Permission]:
    """A built-in role's permissions; any other role has none here (custom roles: `Organization.role_permissions`)."""
    return ROLE_PERMISSIONS.get(cast(BuiltinRole, role), frozenset())


def is_builtin(role: str) -> bool:
    return role in ROLE_PERMISSIONS
