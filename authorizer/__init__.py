"""An authorizer a gateway embeds: `authorize` in-process, from a local replica of the access bucket.

Membership keeps the JetStream key-value bucket `MEMBERSHIP_ACCESS` (`shared.contract.access`); this
replica watches it (an ordered consumer, last value per entry, then every change as it is written)
and answers from a dict: no network round trip per request. It needs only `nats-py` and `msgspec`,
the base install, never the operator tools or the development stack.

    import nats
    from authorizer import Authorizer

    nc = await nats.connect("nats://127.0.0.1:4222")
    authz = await Authorizer.start(nc, max_staleness=5.0)
    decision = authz.check_key(request_api_key, "gateway:use", project_id="proj_web")
    if not decision.allowed:
        ...  # 403; decision.reason says why ("unknown_key", "revoked", "outside_projects", "stale", ...)
    authz.staleness()  # seconds since the writer last said it had published everything
    await authz.stop()

Project scopes (contract v1.4): a key or member may be scoped to some projects (`decision.projects`;
None means every project). A project-level permission (`projects:read`, `projects:use`,
`projects:manage`, `gateway:use`) asked of a scoped principal is allowed only with a `project_id` in
its scope; otherwise the reason is "outside_projects". Org-level permissions ignore `project_id`.

It fails closed: an entry whose value this version cannot read (a permission, a role or a grant
`format` from a newer membership) grants nothing, whatever it granted before; and when the last heartbeat is older than `max_staleness` (the writer is down, the
connection is lost, the watch stalled), every check is denied with reason "stale".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from shared.contract.access import (
    BUCKET,
    HEARTBEAT_ENTRY,
    KEY_PREFIX,
    ROLE_PREFIX,
    Heartbeat,
    KeyGrant,
    RoleGrant,
)
from shared.contract.common import PROJECT_PERMISSIONS

__all__ = ["Authorizer", "Decision"]

T = TypeVar("T")

_KV_STREAM = f"KV_{BUCKET}"
_KV_PREFIX = f"$KV.{BUCKET}."
_decode_key = msgspec.json.Decoder(KeyGrant).decode
_decode_role = msgspec.json.Decoder(RoleGrant).decode
_decode_beat = msgspec.json.Decoder(Heartbeat).decode


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # "allowed", "not_permitted", "outside_projects", "unknown_key", "revoked", "expired", "inactive", "not_a_member", "stale"
    reason: str
    org_id: str | None = None
    principal_type: str | None = None
    principal_id: str | None = None
    role: str | None = None
    permissions: tuple[str, ...] = ()
    projects: tuple[str, ...] | None = None  # the principal's project scope; None: every project


@dataclass(frozen=True, slots=True)
class _Key:
    org_id: str
    key_id: str
    role: str | None
    permissions: frozenset[str]
    sorted_permissions: tuple[str, ...]
    expires_at: float | None  # epoch seconds
    status: str
    projects: frozenset[str] | None
    answers: dict[str, Decision]  # by permission, built once: a check allocates nothing
    refused: Decision
    outside: Decision  # a project-level permission held, asked outside the key's projects


@dataclass(frozen=True, slots=True)
class _Member:
    role: str
    permissions: frozenset[str]
    sorted_permissions: tuple[str, ...]
    projects: frozenset[str] | None
    sorted_projects: tuple[str, ...] | None


class Authorizer:
    def __init__(self, nc: Any, max_staleness: float = 5.0) -> None:
        self.nc = nc
        self.max_staleness = max_staleness
        self.keys: dict[str, _Key] = {}
        self.roles: dict[tuple[str, str], _Member] = {}
        self.heartbeat_at: float | None = None  # the writer's wall clock, epoch seconds
        self.position = 0
        self._subscription: Any = None
        # Secrets seen lately -> their hash: a gateway sees the same keys again and again. Cleared when full.
        self._hashes: dict[str, str] = {}

    @classmethod
    async def start(cls, nc: Any, max_staleness: float = 5.0) -> Authorizer:
        """Connected and watching; returns once the bucket's current values are in."""
        authorizer = cls(nc, max_staleness)
        await authorizer._watch()
        return authorizer

    async def _watch(self) -> None:
        import asyncio

        from nats.js.api import DeliverPolicy

        js = self.nc.jetstream()
        await js.key_value(BUCKET)  # raises BucketNotFoundError when membership has not made it yet
        loaded = asyncio.Event()

        async def received(message: Any) -> None:
            self._apply(message.subject[len(_KV_PREFIX) :], message.data, message.header)
            if message.metadata.num_pending == 0:
                loaded.set()

        self._subscription = await js.subscribe(
            f"{_KV_PREFIX}>", stream=_KV_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, cb=received
        )
        info = await self._subscription.consumer_info()
        if info.num_pending == 0 and self._subscription.delivered == 0:
            loaded.set()
        await loaded.wait()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    def _apply(self, entry: str, value: bytes, headers: dict[str, str] | None) -> None:
        headers = headers or {}
        deleted = headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers
        if entry.startswith(KEY_PREFIX):
            secret_hash = entry[len(KEY_PREFIX) :]
            key = None if deleted else _read(_decode_key, value)
            if key is None:  # deleted, or a value this version cannot read: it grants nothing
                self.keys.pop(secret_hash, None)
            else:
                self.keys[secret_hash] = _key_from(key)
        elif entry.startswith(ROLE_PREFIX):
            org_id, _, user_id = entry[len(ROLE_PREFIX) :].partition(".")
            role = None if deleted else _read(_decode_role, value)
            if role is None:
                self.roles.pop((org_id, user_id), None)
            else:
                self.roles[(org_id, user_id)] = _member_from(role)
        elif entry == HEARTBEAT_ENTRY and not deleted:
            beat = _read(_decode_beat, value)
            if beat is not None:  # an unreadable heartbeat is no heartbeat: the replica goes stale
                self.heartbeat_at = beat.at.timestamp()
                self.position = beat.position

    # -- answering ----------------------------------------------------------------------

    def staleness(self) -> float:
        """Seconds since the writer last had everything saved published (infinite before the first heartbeat)."""
        if self.heartbeat_at is None:
            return float("inf")
        return max(0.0, time.time() - self.heartbeat_at)

    def check_key(self, secret: str, permission: str, project_id: str | None = None) -> Decision:
        now = time.time()
        if self.heartbeat_at is None or now - self.heartbeat_at > self.max_staleness:
            return _STALE
        secret_hash = self._hashes.get(secret)
        if secret_hash is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            secret_hash = self._hashes[secret] = hashlib.sha256(secret.encode()).hexdigest()
        key = self.keys.get(secret_hash)
        if key is None:
            return _UNKNOWN
        if key.status != "live":
            return Decision(False, key.status, key.org_id, "api_key", key.key_id)
        if key.expires_at is not None and now >= key.expires_at:
            return Decision(False, "expired", key.org_id, "api_key", key.key_id)
        answer = key.answers.get(permission, key.refused)
        if answer.allowed and not _reaches(key.projects, permission, project_id):
            return key.outside
        return answer

    def check_user(self, org_id: str, user_id: str, permission: str, project_id: str | None = None) -> Decision:
        if self.heartbeat_at is None or time.time() - self.heartbeat_at > self.max_staleness:
            return _STALE
        held = self.roles.get((org_id, user_id))
        if held is None:
            return Decision(False, "not_a_member", org_id)
        reason = "allowed"
        if permission not in held.permissions:
            reason = "not_permitted"
        elif not _reaches(held.projects, permission, project_id):
            reason = "outside_projects"
        principal = (org_id, "user", user_id, held.role, held.sorted_permissions, held.sorted_projects)
        return Decision(reason == "allowed", reason, *principal)


def _read(decode: Callable[[bytes], T], value: bytes) -> T | None:
    try:
        return decode(value)
    except msgspec.DecodeError:  # also a permission, role or grant format from a newer writer
        return None


def _key_from(grant: KeyGrant) -> _Key:
    listed = tuple(grant.permissions)
    scope = None if grant.projects is None else tuple(grant.projects)
    principal = (grant.org_id, "api_key", grant.key_id, grant.role, listed, scope)
    return _Key(
        org_id=grant.org_id,
        key_id=grant.key_id,
        role=grant.role,
        permissions=frozenset(listed),
        sorted_permissions=listed,
        expires_at=grant.expires_at.timestamp() if grant.expires_at is not None else None,
        status=grant.status,
        projects=None if scope is None else frozenset(scope),
        answers={p: Decision(True, "allowed", *principal) for p in listed},
        refused=Decision(False, "not_permitted", *principal),
        outside=Decision(False, "outside_projects", *principal),
    )


def _member_from(grant: RoleGrant) -> _Member:
    return _Member(
        grant.role,
        frozenset(grant.permissions),
        tuple(grant.permissions),
        None if grant.projects is None else frozenset(grant.projects),
        None if grant.projects is None else tuple(grant.projects),
    )


def _reaches(projects: frozenset[str] | None, permission: str, project_id: str | None) -> bool:
    """The contract's rule (v1.4): a scoped principal holds a project-level permission only in its projects."""
    return projects is None or permission not in PROJECT_PERMISSIONS or (project_id is not None and project_id in projects)


_HASH_CACHE_SIZE = 100_000
_STALE = Decision(False, "stale")
_UNKNOWN = Decision(False, "unknown_key")
