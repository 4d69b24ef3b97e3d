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
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NoKeysError

from shared.cancellation import raise_if_cancel_pending
from shared.contract.access import BUCKET, HEARTBEAT_ENTRY, ROLE_PREFIX, Heartbeat, key_entry, role_entry

from .access_index import AccessIndex, Changes

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

    from .application import MembershipApplication
    from .domain.events import OrganizationEvent

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
    """Runs as a task of its own while the relay holds the lock: the relay only hands it batches and
    "caught up" marks (never waits on the bucket), so a slow or failing bucket never holds up the
    event stream. On any failure it starts again from the store; meanwhile no heartbeat is put, and
    gateways fail closed once their bound passes."""

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
        self._queue: asyncio.Queue[tuple[Sequence[OrganizationEvent], int, float | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing = False

    # -- the relay's side: never blocks ------------------------------------------------

    def activate(self) -> None:
        """The relay took the lock."""
        self.deactivate()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(self._queue))

    def deactivate(self) -> None:
        """The relay lost the lock (or stops): no more writes from here."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._writing = False

    def published(self, events: Sequence[OrganizationEvent], position: int) -> None:
        """The relay published these, up to notification `position`. While the writer is (re)starting
        they are left out: its rebuild from the store covers them."""
        if self._writing:
            self._queue.put_nowait((events, position, None))

    def caught_up(self, position: int, at_wall_clock: float) -> None:
        """The relay found nothing left in the log as of `at_wall_clock`."""
        if self._writing and time.monotonic() - self._last_beat >= self.heartbeat_seconds:
            self._last_beat = time.monotonic()
            self._queue.put_nowait(((), position, at_wall_clock))

    # -- the writer ---------------------------------------------------------------------

    async def _run(self, queue: asyncio.Queue[tuple[Sequence[OrganizationEvent], int, float | None]]) -> None:
        while True:
            try:
                await self._start()
                while True:
                    raise_if_cancel_pending()  # one a bucket call swallowed (nats-py's wait_for, on 3.11)
                    events, position, beat_at = await queue.get()
                    if events:
                        self.index.apply(events)
                        while self._pending:
                            await self._write(self._pending.pop(0))
                    if beat_at is not None:
                        assert self._kv is not None
                        beat = Heartbeat(at=datetime.fromtimestamp(beat_at, UTC), position=position)
                        await self._kv.put(HEARTBEAT_ENTRY, _encode(beat))
            except asyncio.CancelledError:
                raise
            except Exception:
                self._writing = False
                log.exception("access bucket writer failed; starting again from the store")
                await asyncio.sleep(1.0)

    async def _start(self) -> None:
        """A fresh index from the store, every entry put, the roles of members gone deleted."""
        self._writing = True  # batches from now on are queued; the rebuild below covers those before
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

    async def _write(self, changes: Changes) -> None:
        assert self._kv is not None
        kv = self._kv
        puts = [kv.put(key_entry(h), _encode(access.grant())) for h, access in changes.keys.items()]
        puts += [kv.put(role_entry(o, u), _encode(grant)) for (o, u), grant in changes.roles.items()]
        puts += [kv.delete(role_entry(o, u)) for o, u in changes.roles_gone]
        for start in range(0, len(puts), 256):
            await asyncio.gather(*puts[start : start + 256])
