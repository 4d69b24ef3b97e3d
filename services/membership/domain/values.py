"""What an organization holds, as small immutable values with the behaviour that belongs to them.

Events replace values, never mutate them, so a copy of the organization that shares them is safe
to change: `Organization.__deepcopy__` copies only the dicts that index them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from eventsourcing.persistence import Transcoding

from shared.contract.common import Role

InvitationStatus = Literal["pending", "accepted", "revoked"]


@dataclass(frozen=True)
class ActorRef:
    """Who did something, as events record it."""

    type: str
    id: str

    @classmethod
    def of(cls, recorded: dict[str, str] | None) -> ActorRef | None:
        return cls(recorded["type"], recorded["id"]) if recorded else None


@dataclass(frozen=True)
class CustomRole:
    """A role an enterprise organization defines: a key and a set of permissions (never
    `owners:manage` nor `org:manage`)."""

    role_key: str
    name: str
    description: str
    permissions: frozenset[str]

    def described(self) -> dict[str, Any]:
        """As events carry it (`RoleUpdated.previous`)."""
        return {"name": self.name, "description": self.description, "permissions": sorted(self.permissions)}


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str
    role: Role
    joined_at: datetime


@dataclass(frozen=True)
class Invitation:
    invitation_id: str
    email: str
    role: Role
    invited_at: datetime
    expires_at: datetime
    status: InvitationStatus
    invited_by: ActorRef | None = None  # None only in snapshots taken before it was kept

    def is_pending(self, now: datetime) -> bool:
        """Holds a seat: not accepted, not revoked, not yet expired."""
        return self.status == "pending" and now < self.expires_at

    def has_lapsed(self, now: datetime) -> bool:
        return self.status == "pending" and now >= self.expires_at

    def status_at(self, now: datetime) -> str:
        return "expired" if self.has_lapsed(now) else self.status


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    prefix: str
    owner_user_id: str | None
    permissions: frozenset[str]
    expires_at: datetime | None
    secret_hash: str
    created_at: datetime
    created_by: ActorRef | None  # None for keys recorded before creators were
    revoked: bool = False

    def has_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status_at(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.has_expired(now) else "live"


class _ValueTranscoding(Transcoding):
    """Snapshots store values as JSON objects; frozensets as sorted lists."""

    def __init__(self, value_type: type[Any]) -> None:
        self.type = value_type
        self.name = f"membership.{value_type.__name__}"

    def encode(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, ApiKey | CustomRole):
            return {**vars(obj), "permissions": sorted(obj.permissions)}
        return dict(vars(obj))  # nested values (an ActorRef) are encoded by their own transcoding

    def decode(self, data: dict[str, Any]) -> Any:
        if self.type in (ApiKey, CustomRole):
            return self.type(**{**data, "permissions": frozenset(data["permissions"])})
        return self.type(**data)


VALUE_TRANSCODINGS = [_ValueTranscoding(t) for t in (ActorRef, Member, Invitation, ApiKey, CustomRole)]
