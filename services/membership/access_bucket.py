"""The access bucket's one writer: gateways' authorizers replicate it (`shared.contract.access`).

It runs inside the relay, under the relay's lock, so there is one writer at a time and it writes in
the order of the notification log. On taking the lock it builds an access index of its own from the
store and puts every entry (a new writer is never behind what an old one wrote: both write only
saved events); then, after each batch the relay publishes, it applies the batch to that index and
puts what changed. When a batch leaves nothing behind in the log, it puts a heartbeat: a replica
knows its feed's age from it. The MEMBERSHIP stream never carries any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import structlog
from eventsourcing.persistence import Notification
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NoKeysError

from shared.contract.access import BUCKET, HEARTBEAT_ENTRY, ROLE_PREFIX, Heartbeat, key_entry, role_entry

from .access_index import AccessIndex, Changes

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from .application import MembershipApplication

log = structlog.get_logger()
_encode = msgspec.json.Encoder().encode


async def open_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The bucket, created when missing: one value per entry (history 1), file storage."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE, replicas=replicas, direct=True)
        )


class AccessBucket:
    def __init__(
        self, app: MembershipApplication, js: JetStreamContext, replicas: int = 1, heartbeat_seconds: float = 0.5
    ) -> None:
        self.app = app
        self.js = js
        self.replicas = replicas
        self.heartbeat_seconds = heartbeat_seconds
        self.index = AccessIndex(app.clock.now)
        self._pending: list[Changes] = []
        self._kv: KeyValue | None = None
        self._last_beat = 0.0

    async def start(self) -> int:
        """Called when the relay takes the lock: a fresh index from the store, every entry put, the
        roles of members gone deleted. Returns the notification position the index holds."""
        self._kv = await open_bucket(self.js, self.replicas)
        self.index = AccessIndex(self.app.clock.now)
        position = await asyncio.to_thread(self.index.load, self.app)
        self.index.listeners.append(self._pending.append)
        self._pending.clear()
        await self._write(self.index.everything())
        try:
            present = await self._kv.keys()
        except NoKeysError:
            present = []
        wanted = {role_entry(o, u) for o, u in self.index.roles}
        for entry in present:
            if entry.startswith(ROLE_PREFIX) and entry not in wanted:
                await self._kv.delete(entry)
        log.info("access bucket written", keys=len(self.index.by_hash), roles=len(self.index.roles), position=position)
        return position

    async def published(self, notifications: Sequence[Notification]) -> None:
        """The relay published these: apply them, put what changed."""
        self.index.apply(self.app.mapper.to_domain_event(n) for n in notifications)
        while self._pending:
            await self._write(self._pending.pop(0))

    async def caught_up(self, position: int, at_wall_clock: float) -> None:
        """The relay found nothing left in the log as of `at_wall_clock`: a heartbeat, when due."""
        if self._kv is None or time.monotonic() - self._last_beat < self.heartbeat_seconds:
            return
        self._last_beat = time.monotonic()
        beat = Heartbeat(at=datetime.fromtimestamp(at_wall_clock, UTC), position=position)
        await self._kv.put(HEARTBEAT_ENTRY, _encode(beat))

    async def _write(self, changes: Changes) -> None:
        assert self._kv is not None
        kv = self._kv
        puts = [kv.put(key_entry(h), _encode(access.grant())) for h, access in changes.keys.items()]
        puts += [kv.put(role_entry(o, u), _encode(grant)) for (o, u), grant in changes.roles.items()]
        puts += [kv.delete(role_entry(o, u)) for o, u in changes.roles_gone]
        for start in range(0, len(puts), 256):
            await asyncio.gather(*puts[start : start + 256])
