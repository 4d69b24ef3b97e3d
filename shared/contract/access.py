"""The access bucket: what membership publishes for gateways that authorize in-process.

A JetStream key-value bucket, apart from the MEMBERSHIP stream (which never carries a key's hash).
One writer (the membership instance holding the relay lock) keeps it; gateways only read it,
through a local replica (`authorizer.Authorizer`).

Entries:
- `key.<sha256 of the secret>`  -> `KeyGrant`: the key's effective permissions (already capped by its
  owner's role and its creator's current rights), the expiry after which it is dead, its status, and
  its effective project scope (v1.4: the key's own, within its owner's and creator's current ones).
- `role.<org_id>.<user_id>`     -> `RoleGrant`; deleted when the member leaves.
- `feed.heartbeat`              -> `Heartbeat`: when the writer last had published everything saved.
  A replica whose last heartbeat is older than its bound fails closed.

A replica that cannot read an entry's value (a permission, a role or a `format` it does not know)
drops that entry: the key is unknown, the user no member. So a grant a newer writer changes in a way
an older replica cannot read grants nothing there, never what the entry granted before. A change of
meaning that an older replica would still decode (a new field it would ignore, as `projects` was in
v1.4) must raise `GRANT_FORMAT`, which older replicas refuse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

from .common import Permission, Role

BUCKET = "MEMBERSHIP_ACCESS"
HEARTBEAT_ENTRY = "feed.heartbeat"
KEY_PREFIX = "key."
ROLE_PREFIX = "role."

KeyStatus = Literal["live", "revoked", "expired", "inactive"]
# The grants' format. A replica reads only the format it knows; absent (grants written before the field) reads as 1.
GRANT_FORMAT: Final = 1
GrantFormat = Literal[1]


def key_entry(secret_hash: str) -> str:
    return KEY_PREFIX + secret_hash


def role_entry(org_id: str, user_id: str) -> str:
    return f"{ROLE_PREFIX}{org_id}.{user_id}"


class KeyGrant(msgspec.Struct, frozen=True, kw_only=True):
    """`permissions` are effective until `expires_at` (the earliest expiry along the key's chain of
    creators); empty when the key is revoked or capped to nothing (its owner gone, say)."""

    org_id: str
    key_id: str
    role: Role | None  # the owner's role, for a key with an owner
    permissions: list[Permission]
    expires_at: datetime | None
    status: KeyStatus
    version: int  # the organization's version the grant was computed at
    projects: list[str] | None = None  # the effective project scope (v1.4); null: every project
    format: GrantFormat = GRANT_FORMAT


class RoleGrant(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    user_id: str
    role: Role
    permissions: list[Permission]  # the role's, so a replica needs no copy of the matrix
    version: int
    projects: list[str] | None = None  # the member's project scope (v1.4); null: every project
    format: GrantFormat = GRANT_FORMAT


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime  # the writer's clock when it had applied every event saved before
    position: int  # the last notification applied
