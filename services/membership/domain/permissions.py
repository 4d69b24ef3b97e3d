"""Who may do what: the role and permission matrix of the contract."""

from __future__ import annotations

from typing import cast

from shared.contract.common import PERMISSIONS, Permission, Role

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

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": _MANAGERS,
    "developer": _EVERYONE,
}


def permissions_of(role: str) -> frozenset[Permission]:
    """A role's permissions; a role the contract does not know has none."""
    return ROLE_PERMISSIONS.get(cast(Role, role), frozenset())
