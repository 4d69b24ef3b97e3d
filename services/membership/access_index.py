"""The access index: `authorize` answered from memory, kept in event order.

Per organization the index holds its own `Organization` (built by the same events, so the domain's
rules answer: `Organization.key_permissions`), and derived from it, whenever a change touches
members or keys:
- a key's secret hash -> `KeyAccess` (principal, effective permissions and project scope, expiry, status);
- (org_id, user_id) -> `MemberAccess`: the role and the permissions it grants now (a custom role's
  as currently defined: `RoleUpdated` changes every holder's entry and every key they own), and the
  member's project scope (`RoleChanged` may change it, and so every key they own or created).

`authorize_key` / `authorize_user` are plain dict look-ups on the event loop: no PostgreSQL, no org
lock, no thread. Changes arrive three ways, all in per-organization order (an event whose version is
not the next one is skipped when already applied, and never applied out of turn):
- `build`: every event of the notification log, at start;
- `adopt`: the organization a command of this instance just saved, before the reply (read your writes);
- `IndexFollower`: every event on the MEMBERSHIP stream, so other instances' writes arrive. The
  stream carries no key hashes, so the follower reads the organization's new events from the store,
  off the hot path, when the stream says there are some.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import msgspec
import structlog

from shared import paging, pricing, subjects
from shared.cancellation import raise_if_cancel_pending
from shared.contract import queries as q
from shared.contract.access import KeyGrant, KeyStatus, RoleGrant

from .authorization import answer, denied
from .domain import events as ev
from .domain.organization import Organization, org_uuid
from .domain.scopes import Scope
from .domain.values import ApiKey
from .secrets import hash_secret

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from .application import Decision, MembershipApplication

# Time-independent permissions: computed "before any expiry", the expiry kept apart (see `_key_access`).
_BEFORE_ANY_EXPIRY = datetime(1, 1, 1, tzinfo=UTC)
# Events that change neither members nor keys: the derived entries stay as they are. Every role event
# refreshes (they are rare): `RoleUpdated` changes every holder's entry and their keys'.
_NO_ACCESS_CHANGE = (
    ev.PlanChanged,
    ev.MemberInvited,
    ev.InvitationResent,
    ev.InvitationRevoked,
    ev.SeatAdded,
    ev.SeatRemoved,
)
BUILD_BATCH = 1000

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class KeyAccess:
    org_id: str
    key_id: str
    role: str | None
    permissions: tuple[str, ...]  # sorted, effective until `expires_at`
    expires_at: datetime | None
    status: KeyStatus
    version: int
    projects: tuple[str, ...] | None  # sorted, the effective scope; None: every project

    def granted_at(self, now: datetime) -> tuple[str, ...]:
        if self.expires_at is not None and now >= self.expires_at:
            return ()
        return self.permissions

    def grant(self) -> KeyGrant:
        return KeyGrant(
            org_id=self.org_id,
            key_id=self.key_id,
            role=self.role,
            permissions=list(self.permissions),  # type: ignore[arg-type]
            expires_at=self.expires_at,
            status=self.status,
            version=self.version,
            projects=None if self.projects is None else list(self.projects),
        )


@dataclass(frozen=True, slots=True)
class MemberAccess:
    role: str
    permissions: tuple[str, ...]  # sorted: the role's, as defined at the organization's version
    projects: tuple[str, ...] | None  # sorted: the member's scope; None: every project


@dataclass
class Changes:
    """What one refresh of an organization changed, for the access bucket's writer."""

    keys: dict[str, KeyAccess]  # by secret hash
    roles: dict[tuple[str, str], RoleGrant]
    roles_gone: set[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.keys or self.roles or self.roles_gone)


class AccessIndex:
    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.orgs: dict[str, Organization] = {}
        self.by_hash: dict[str, KeyAccess] = {}
        self.roles: dict[tuple[str, str], MemberAccess] = {}
        self._org_keys: dict[str, dict[str, KeyAccess]] = {}
        self._org_roles: dict[str, dict[str, MemberAccess]] = {}
        self._user_orgs: dict[str, set[str]] = {}
        self.listeners: list[Callable[[Changes], None]] = []

    # -- answering (the hot path) -----------------------------------------------------

    def authorize_key(self, secret: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        access = self.by_hash.get(hash_secret(secret))
        if access is None:
            return denied()
        granted = access.granted_at(self.now())
        if not granted:
            return denied(access.org_id)
        return answer(access.org_id, "api_key", access.key_id, access.role, granted, access.projects, permission, project_id)

    def authorize_user(self, org_id: str, user_id: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        if org_id not in self.orgs:
            return denied()
        access = self.roles.get((org_id, user_id))
        if access is None:
            return denied(org_id)
        return answer(org_id, "user", user_id, access.role, access.permissions, access.projects, permission, project_id)

    def user_orgs(self, query: q.UserOrgsQuery) -> q.UserOrgsPage:
        """The organizations `user_id` is a member of, the earliest joined first, one page."""
        memberships = [
            (self.orgs[org_id], self.orgs[org_id].members[query.user_id]) for org_id in self._user_orgs.get(query.user_id, ())
        ]
        chosen, next_cursor = paging.page(
            memberships,
            lambda held: (pricing.microseconds(held[1].joined_at), held[0].org_id),
            query.cursor,
            query.limit,
            lambda held: q.UserOrgView(
                org_id=held[0].org_id, org_name=held[0].name, role=held[1].role, joined_at=held[1].joined_at
            ),
        )
        return q.UserOrgsPage(orgs=chosen, next_cursor=next_cursor)

    # -- changing ------------------------------------------------------------------------

    def version(self, org_id: str) -> int:
        org = self.orgs.get(org_id)
        return org.version if org is not None else 0

    def apply(self, events: Iterable[Any]) -> int:
        """Applies saved domain events that come next for their organization; returns how many."""
        applied = 0
        touched: set[str] = set()
        for event in events:
            org_id = cast(ev.OrganizationEvent, event).org_id
            if event.originator_version != self.version(org_id) + 1:
                continue  # already applied, or not its turn (the follower fetches what is missing)
            org = self.orgs.get(org_id)
            self.orgs[org_id] = cast(Organization, event.mutate(org))
            applied += 1
            if not isinstance(event, _NO_ACCESS_CHANGE):
                touched.add(org_id)
        for org_id in touched:
            self._refresh(org_id)
        return applied

    def adopt(self, decision: Decision) -> None:
        """Read your writes: the organization a command just saved replaces an older one."""
        org = decision.org
        if org is None or not decision.recorded or org.version <= self.version(decision.org_id):
            return
        self.orgs[decision.org_id] = copy.deepcopy(org)
        if not all(isinstance(e, _NO_ACCESS_CHANGE) for e in decision.recorded):
            self._refresh(decision.org_id)

    def _refresh(self, org_id: str) -> None:
        org = self.orgs[org_id]
        old_keys = self._org_keys.get(org_id, {})
        keys = {key.secret_hash: _key_access(org, key) for key in org.api_keys.values()}
        old_roles = self._org_roles.get(org_id, {})
        roles = {
            user_id: MemberAccess(member.role, tuple(sorted(org.role_permissions(member.role))), _sorted(member.projects))
            for user_id, member in org.members.items()
        }
        for secret_hash, access in keys.items():
            self.by_hash[secret_hash] = access
        for user_id in old_roles.keys() - roles.keys():
            self.roles.pop((org_id, user_id), None)
            self._leave(user_id, org_id)
        for user_id, member_access in roles.items():
            self.roles[(org_id, user_id)] = member_access
            self._user_orgs.setdefault(user_id, set()).add(org_id)
        self._org_keys[org_id] = keys
        self._org_roles[org_id] = roles
        if self.listeners:
            changes = Changes(
                keys={h: a for h, a in keys.items() if _differs(old_keys.get(h), a)},
                roles={(org_id, u): role_grant(org_id, u, a, org.version) for u, a in roles.items() if old_roles.get(u) != a},
                roles_gone={(org_id, u) for u in old_roles.keys() - roles.keys()},
            )
            if changes:
                for listener in self.listeners:
                    listener(changes)

    def _leave(self, user_id: str, org_id: str) -> None:
        held = self._user_orgs.get(user_id)
        if held is not None:
            held.discard(org_id)
            if not held:
                del self._user_orgs[user_id]

    def everything(self) -> Changes:
        """Every entry, as changes: what a new writer of the access bucket puts first."""
        return Changes(
            keys=dict(self.by_hash),
            roles={(o, u): role_grant(o, u, a, self.version(o)) for (o, u), a in self.roles.items()},
            roles_gone=set(),
        )

    def state(self) -> tuple[dict[str, KeyAccess], dict[tuple[str, str], MemberAccess], dict[str, int], dict[str, set[str]]]:
        """What the index answers from, for comparing two indexes."""
        versions = {org_id: org.version for org_id, org in self.orgs.items()}
        return dict(self.by_hash), dict(self.roles), versions, {user: set(orgs) for user, orgs in self._user_orgs.items()}

    # -- building --------------------------------------------------------------------------

    def load(self, app: MembershipApplication, after: int = 0) -> int:
        """Applies the notification log after `after` (synchronous: run it in a thread before serving,
        or on an index nobody reads yet); returns the last notification id applied."""
        position = after
        while True:
            notifications = app.recorder.select_notifications(position + 1, BUILD_BATCH)
            if not notifications:
                return position
            self.apply(app.mapper.to_domain_event(n) for n in notifications)
            position = notifications[-1].id

    def new_events(self, app: MembershipApplication, org_id: str) -> list[Any]:
        """The organization's saved events the index lacks (synchronous: the event store)."""
        version = self.version(org_id)
        return list(app.events.get(org_uuid(org_id), gt=version or None))


def _key_access(org: Organization, key: ApiKey) -> KeyAccess:
    """The domain's own rule (`key_permissions`), asked before any expiry; the expiry along the key's
    chain of creating keys is kept apart, so the answer at any time is one comparison."""
    granted = tuple(sorted(org.key_permissions(key, _BEFORE_ANY_EXPIRY)))
    scope = _sorted(org.key_scope(key, _BEFORE_ANY_EXPIRY))
    owner = org.members.get(key.owner_user_id) if key.owner_user_id else None
    status: KeyStatus = "revoked" if key.revoked else ("live" if granted else "inactive")
    return KeyAccess(
        org_id=org.org_id,
        key_id=key.key_id,
        role=owner.role if owner else None,
        permissions=granted,
        expires_at=_chain_expiry(org, key),
        status=status,
        version=org.version,
        projects=scope,
    )


def _sorted(scope: Scope) -> tuple[str, ...] | None:
    return None if scope is None else tuple(sorted(scope))


def role_grant(org_id: str, user_id: str, access: MemberAccess, version: int) -> RoleGrant:
    return RoleGrant(
        org_id=org_id,
        user_id=user_id,
        role=access.role,
        permissions=list(access.permissions),  # type: ignore[arg-type]
        version=version,
        projects=None if access.projects is None else list(access.projects),
    )


def _chain_expiry(org: Organization, key: ApiKey) -> datetime | None:
    """The earliest expiry of the key and the keys that created it (a key dies with its creator)."""
    earliest = key.expires_at
    seen = {key.key_id}
    creator = key.created_by
    while creator is not None and creator.type == "api_key" and creator.id not in seen:
        seen.add(creator.id)
        parent = org.api_keys.get(creator.id)
        if parent is None:
            break
        if parent.expires_at is not None and (earliest is None or parent.expires_at < earliest):
            earliest = parent.expires_at
        creator = parent.created_by
    return earliest


def _differs(old: KeyAccess | None, new: KeyAccess) -> bool:
    return old is None or (old.role, old.permissions, old.expires_at, old.status, old.projects) != (
        new.role,
        new.permissions,
        new.expires_at,
        new.status,
        new.projects,
    )


class _Sequence(msgspec.Struct):
    sequence: int


_sequence_of = msgspec.json.Decoder(_Sequence).decode


class IndexFollower:
    """Keeps the index up with every instance's writes: from the MEMBERSHIP stream (an ordered consumer of
    its own, from a given position), or from this process's relay while it holds the relay's lock.

    For each event the index lacks, it reads the organization's new events from the store (in a thread)
    and applies them in order: the stream carries no key hashes. The relay's events do (they are the
    saved ones), so they are applied as they are, and only a gap (the index behind the batch for an
    organization) costs a read of the store.

    While the relay is active every event of the log passes through it, so the stream subscription,
    which would only receive back what the relay just published, stands down; but only once it has
    received the stream's last sequence as the relay found it on taking the lock, so that a backlog
    the previous relay published is not lost. When the relay stops, the subscription resumes after
    the highest sequence of the last batch the relay published and applied (a batch that failed part
    way is received again: applying is idempotent)."""

    def __init__(self, index: AccessIndex, app: MembershipApplication, js: JetStreamContext, start_seq: int) -> None:
        self.index = index
        self.app = app
        self.js = js
        self.start_seq = start_seq  # where the next subscription starts
        self.subscribed = False  # (tests, metrics)
        self.subscriptions = 0  # made so far (tests)
        self._behind: dict[str, int] = {}  # org -> the highest version seen on the stream or from the relay
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._relay_active = False
        self._stand_down_after: int | None = None  # the relay is active: stand down once past this sequence
        self._stood_down = False
        self._relayed_seq = 0  # every message up to this sequence was received here or applied from the relay

    # -- the relay's side (on the loop; never blocks) --------------------------------------

    def relay_activated(self, stream_last_seq: int) -> None:
        """The relay took the lock, and found the stream's last sequence at `stream_last_seq`."""
        self._relay_active = True
        self._relayed_seq = stream_last_seq
        self._stand_down_after = stream_last_seq

    def relay_published(self, events: Sequence[Any], highest_seq: int) -> None:
        """The relay published these saved events (acked, up to stream sequence `highest_seq`)."""
        if not self._relay_active:
            return
        index = self.index
        index.apply(events)
        for event in events:
            org_id = event.org_id
            if event.originator_version > index.version(org_id):  # the index lacks an earlier one
                self._mark_behind(org_id, event.originator_version)
        self._relayed_seq = max(self._relayed_seq, highest_seq)

    def relay_deactivated(self) -> None:
        """The relay lost the lock, or stopped: the stream again, after what the relay applied."""
        if not self._relay_active:
            return
        self._relay_active = False
        self._stand_down_after = None
        if self._stood_down:
            self._stood_down = False
            self.start_seq = self._relayed_seq + 1
            self._changed.set()

    # -- the stream --------------------------------------------------------------------------

    async def run(self) -> None:
        catching_up = asyncio.create_task(self._catching_up())
        subscription = None
        try:
            while True:
                raise_if_cancel_pending()  # one a subscribe or unsubscribe swallowed (nats-py's wait_for, on 3.11)
                if subscription is None and not self._stood_down:
                    subscription = await self._subscribe(self.start_seq)
                elif subscription is not None and self._stood_down:
                    await subscription.unsubscribe()
                    subscription = None
                else:
                    self.subscribed = subscription is not None
                    await self._changed.wait()
                    self._changed.clear()
        finally:
            self.subscribed = False
            catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catching_up
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _subscribe(self, start_seq: int) -> Any:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1))
        self.subscriptions += 1
        return await self.js.subscribe(
            subjects.EVENTS_WILDCARD, stream=subjects.STREAM, ordered_consumer=True, config=config, cb=self._received
        )

    async def _received(self, message: Any) -> None:
        if self._stood_down:
            return  # delivered before the unsubscribe: the relay covers it
        org_id = message.subject.split(".")[2]
        try:
            sequence = _sequence_of(message.data).sequence
        except (msgspec.DecodeError, RecursionError):
            log.warning("access index: an event without a sequence", subject=message.subject)
            sequence = 0
        if sequence > self.index.version(org_id):
            self._mark_behind(org_id, sequence)
        if self._stand_down_after is not None and message.metadata.sequence.stream >= self._stand_down_after:
            self._stand_down_after = None
            self._stood_down = True  # the orgs marked behind so far are still caught up
            self._changed.set()

    def _mark_behind(self, org_id: str, version: int) -> None:
        if version > self._behind.get(org_id, 0):
            self._behind[org_id] = version
            self._wake.set()

    async def _catching_up(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._catch_up()

    async def _catch_up(self) -> None:
        while self._behind:
            org_id, version = next(iter(self._behind.items()))
            if self.index.version(org_id) < version:
                try:
                    events = await asyncio.to_thread(self.index.new_events, self.app, org_id)
                except Exception:
                    log.exception("access index: reading new events failed; retrying", org_id=org_id)
                    await asyncio.sleep(0.5)
                    continue
                self.index.apply(events)
            if self._behind.get(org_id) == version:
                del self._behind[org_id]


async def stream_position(js: JetStreamContext) -> int:
    """The stream's last sequence now: an index built from the store after this misses nothing from
    the sequence after it."""
    return int((await js.stream_info(subjects.STREAM)).state.last_seq)
