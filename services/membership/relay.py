"""The relay: the event store's notification log, in order, onto the JetStream stream.

One active relay at a time (advisory lock). Each message carries `Nats-Msg-Id = event_id`,
so JetStream drops a repeat, and the notification id, so a restarted relay resumes after the
last one the stream holds and first fills any hole left by an interrupted batch.

What this process saves is offered to the relay on the loop right after the commit (`offer`: the
notification ids and the events themselves), and the relay publishes that from memory, without
reading it back and decoding it, but only while the offered ids follow its position without a gap.
Anything else (another instance's events, an id never offered, a memory trimmed) is read from the
store as before, so the log's order and exactly-once never rest on the offers. The store's NOTIFY
still wakes the relay for other writers: a NOTIFY no offer accounts for costs a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import cast

import structlog
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from shared import subjects
from shared.cancellation import raise_if_cancel_pending
from shared.database import single_active

from .access_bucket import AccessBucket
from .access_index import IndexFollower
from .application import MembershipApplication, Saved
from .domain.events import OrganizationEvent
from .publication import NOTIFICATION_HEADER, publication_of
from .stream_publisher import Message, StreamPublisher

RELAY_LOCK_KEY = 0x7EA3_0001
ACK_TIMEOUT_SECONDS = 10.0
OFFERED_CAP = 4096  # events kept from offers; past it the oldest go (then read from the store)
# This process's own commit is NOTIFYed too, often before its offer arrives: a NOTIFY waits that long
# for an offer to account for it before it costs a read. Another writer's events wait that much
# longer; their order does not change.
NOTIFY_GRACE_SECONDS = 0.005
IDLE_READ_SECONDS = 0.5  # the store is read at least this often (missed NOTIFYs, the access heartbeat)

log = structlog.get_logger()


class Relay:
    def __init__(
        self,
        app: MembershipApplication,
        nc: NATS,
        database_url: str,
        batch_size: int = 256,
        access: AccessBucket | None = None,
        index: IndexFollower | None = None,
    ) -> None:
        """`nc` is the relay's own connection; `access`, when given, is written under the same lock, after each
        batch is published; `index`, when given, is fed each published batch while the relay holds the lock."""
        self.app = app
        self.access = access
        self.index = index
        self.js = nc.jetstream()
        self.publisher = StreamPublisher(nc)
        self.database_url = database_url
        self.batch_size = batch_size
        self.position = 0
        self.active = False  # holds the lock (read by the metrics)
        self.reads = 0  # reads of the store while following (tests, metrics)
        self._new_events = asyncio.Event()
        self._offered: dict[int, OrganizationEvent] = {}
        self._unexplained_notifies = 0  # NOTIFYs heard since the last read, less the commits offered since
        self._first_unexplained_at = 0.0
        self._last_read = 0.0
        self._store_has_more = True
        # Only a read can tell that nothing is left in the log: while offers keep the relay busy, a read
        # at least every half heartbeat keeps the access bucket's heartbeat going.
        self._read_every = min(IDLE_READ_SECONDS, access.heartbeat_seconds / 2) if access else IDLE_READ_SECONDS

    def offer(self, saved: Sequence[Saved]) -> None:
        """What one committed transaction of this process saved, in id order, on the loop right after
        the commit. Kept only by the active relay, and only past its position."""
        if not self.active or not saved:
            return
        if saved[0][0] > self.position:  # not read from the store already: its NOTIFY is accounted for
            self._unexplained_notifies -= 1
        for notification_id, event in saved:
            if notification_id > self.position:
                self._offered[notification_id] = event
        while len(self._offered) > OFFERED_CAP:
            del self._offered[next(iter(self._offered))]
        self._new_events.set()

    def _notified(self) -> None:
        if self._unexplained_notifies <= 0:
            self._first_unexplained_at = time.monotonic()
        self._unexplained_notifies += 1
        self._new_events.set()

    async def run(self) -> None:
        """Publishes until cancelled; reconnects after any failure."""
        while True:
            raise_if_cancel_pending()
            try:
                async with single_active(self.database_url, RELAY_LOCK_KEY) as connection:
                    await connection.add_listener(
                        cast(PostgresApplicationRecorder, self.app.recorder).channel_name, lambda *_: self._notified()
                    )
                    log.info("relay active")
                    self.active = True
                    self.position = await self._resume()
                    self._store_has_more = True
                    if self.access is not None:
                        self.access.activate()
                    await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.active = False
                log.exception("relay failed; restarting")
                await asyncio.sleep(1.0)
            finally:
                self.active = False
                self._offered.clear()
                if self.access is not None:
                    self.access.deactivate()
                if self.index is not None:
                    self.index.relay_deactivated()

    async def _follow(self) -> None:
        while True:
            raise_if_cancel_pending()  # one the stream's calls swallowed (nats-py's wait_for, on 3.11)
            self._new_events.clear()
            offered = self._offered_run()
            if offered:
                await self._publish_and_pass_on(offered)
                continue
            wait = self._until_read_due()
            if wait > 0:
                # Not `wait_for`: on 3.11 it swallows a cancel that lands as the event is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._new_events.wait()
                continue
            await self._read()

    async def _read(self) -> None:
        self.reads += 1
        self._unexplained_notifies = 0
        self._last_read = time.monotonic()
        selected_at = self.app.clock.now().timestamp()
        read = self._decoded(await self._select(self.position + 1, self.batch_size))
        if read:
            await self._publish_and_pass_on(read)
        self._store_has_more = len(read) == self.batch_size
        if self.access is not None and not self._store_has_more:
            self.access.caught_up(self.position, selected_at)

    def _offered_run(self) -> list[Saved]:
        """The offered events that follow the position without a gap, a batch at most; the memory at or
        below the position goes."""
        for stale in [n for n in self._offered if n <= self.position]:
            del self._offered[stale]
        run: list[Saved] = []
        while len(run) < self.batch_size and (event := self._offered.pop(self.position + len(run) + 1, None)) is not None:
            run.append((self.position + len(run) + 1, event))
        return run

    def _until_read_due(self) -> float:
        """Seconds until the store must be read: at once when it holds more than the last read took, or
        when the memory has a gap after the position (the store holds what was not offered); after the
        grace when a NOTIFY is not accounted for; else after the read interval."""
        now = time.monotonic()
        if self._store_has_more or self._offered:
            return 0.0
        due = self._last_read + self._read_every
        if self._unexplained_notifies > 0:
            due = min(due, self._first_unexplained_at + NOTIFY_GRACE_SECONDS)
        return max(due - now, 0.0)

    async def _publish_and_pass_on(self, saved: Sequence[Saved]) -> None:
        highest_seq = await self._publish(saved)
        self.position = saved[-1][0]
        events = [event for _, event in saved]
        if self.index is not None:
            self.index.relay_published(events, highest_seq)
        if self.access is not None:
            self.access.published(events, self.position)

    async def _resume(self) -> int:
        """The last notification id on the stream, after re-publishing holes just below it."""
        state = (await self.js.stream_info(subjects.STREAM)).state
        if self.index is not None:
            self.index.relay_activated(state.last_seq)  # from here on every event passes through this relay
        if state.last_seq == 0:
            return 0
        recent = await self._recent_notification_ids(state.first_seq, state.last_seq)
        if not recent:
            return 0
        holes = sorted(set(range(min(recent), max(recent) + 1)) - recent)
        for notification_id in holes:
            hole = self._decoded(await self._select(notification_id, 1))
            highest_seq = await self._publish(hole)
            if self.index is not None:
                self.index.relay_published([event for _, event in hole], highest_seq)
        if holes:
            log.warning("relay filled holes", count=len(holes))
        log.info("relay resumes", after_notification=max(recent))
        return max(recent)

    async def _recent_notification_ids(self, first_seq: int, last_seq: int) -> set[int]:
        ids = set()
        for seq in range(max(first_seq, last_seq - self.batch_size + 1), last_seq + 1):
            try:
                message = await self.js.get_msg(subjects.STREAM, seq)
            except NotFoundError:
                continue
            if message.headers and NOTIFICATION_HEADER in message.headers:
                ids.add(int(message.headers[NOTIFICATION_HEADER]))
        return ids

    async def _select(self, start: int, limit: int) -> Sequence[Notification]:
        return await asyncio.to_thread(self.app.recorder.select_notifications, start, limit)

    def _decoded(self, notifications: Sequence[Notification]) -> list[Saved]:
        return [(n.id, cast(OrganizationEvent, self.app.mapper.to_domain_event(n))) for n in notifications]

    async def _publish(self, saved: Sequence[Saved]) -> int:
        """The highest stream sequence of the batch's acks."""
        messages = []
        for notification_id, event in saved:
            publication = publication_of(event)
            headers = {"Nats-Msg-Id": publication.event_id, NOTIFICATION_HEADER: str(notification_id)}
            messages.append(Message(publication.subject, publication.body, headers))
        # An ack lost with the connection never comes: give up on the batch and resume from the stream.
        return await self.publisher.publish(messages, timeout=ACK_TIMEOUT_SECONDS)
