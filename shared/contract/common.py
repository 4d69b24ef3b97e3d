"""Value types shared by commands, queries and events."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec

Identifier = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Cents = Annotated[int, msgspec.Meta(ge=0)]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

Role = Literal["owner", "admin", "developer"]
Plan = Literal["free", "pro", "enterprise"]
ActorType = Literal["user", "api_key", "scim", "system"]
Permission = Literal[
    "org:read",
    "org:manage",
    "billing:read",
    "billing:manage",
    "members:read",
    "members:invite",
    "members:manage",
    "owners:manage",
    "projects:read",
    "projects:use",
    "projects:manage",
    "api_keys:read",
    "api_keys:own",
    "api_keys:manage",
    "audit:read",
    "gateway:use",
]

ROLES: tuple[Role, ...] = ("owner", "admin", "developer")
PLANS: tuple[Plan, ...] = ("free", "pro", "enterprise")
PERMISSIONS: tuple[Permission, ...] = Permission.__args__  # type: ignore[attr-defined]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def normalize_email(raw: str) -> str:
    """Trimmed and lower-cased; raises ValueError when it is not an address."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ValueError(f"not a valid email address: {raw!r}")
    return email


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: ActorType
    id: Identifier
