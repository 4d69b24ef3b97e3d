"""The relay: the event store's notification log, in order, onto the JetStream stream.

One active relay at a time (advisory lock). Each message carries `Nats-Msg-Id = event_id`,
so JetStream drops a repeat, and the notification id, so a restarted relay resumes after the
last one the stream holds and first fills any hole left by an interrupted batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import cast

import structlog
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.database import single_active

from .access_bucket import AccessBucket
from .application import MembershipApplication
from .domain.events import OrganizationEvent
from .publication import NOTIFICATION_HEADER, publication_of

RELAY_LOCK_KEY = 0x7EA3_0001
ACK_TIMEOUT_SECONDS = 10.0

log = structlog.get_logger()


class Relay:
    def __init__(
        self,
        app: MembershipApplication,
        js: JetStreamContext,
        database_url: str,
        batch_size: int = 256,
        access: AccessBucket | None = None,
    ) -> None:
        """`access`, when given, is written under the same lock, after each batch is published."""
        self.app = app
        self.access = access
        self.js = js
        self.database_url = database_url
        self.batch_size = batch_size
        self.position = 0
        self.active = False  # holds the lock (read by the metrics)
        self._new_events = asyncio.Event()

    async def run(self) -> None:
        """Publishes until cancelled; reconnects after any failure."""
        while True:
            try:
                async with single_active(self.database_url, RELAY_LOCK_KEY) as connection:
                    await connection.add_listener(
                        cast(PostgresApplicationRecorder, self.app.recorder).channel_name, lambda *_: self._new_events.set()
                    )
                    log.info("relay active")
                    self.active = True
                    self.position = await self._resume()
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
                if self.access is not None:
                    self.access.deactivate()

    async def _follow(self) -> None:
        while True:
            self._new_events.clear()
            selected_at = self.app.clock.now().timestamp()
            notifications = await self._select(self.position + 1, self.batch_size)
            if notifications:
                await self._publish(notifications)
                self.position = notifications[-1].id
                if self.access is not None:
                    self.access.published(notifications)
            if self.access is not None and len(notifications) < self.batch_size:
                self.access.caught_up(self.position, selected_at)
            if notifications:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_events.wait(), timeout=0.5)

    async def _resume(self) -> int:
        """The last notification id on the stream, after re-publishing holes just below it."""
        state = (await self.js.stream_info(subjects.STREAM)).state
        if state.last_seq == 0:
            return 0
        recent = await self._recent_notification_ids(state.first_seq, state.last_seq)
        if not recent:
            return 0
        holes = sorted(set(range(min(recent), max(recent) + 1)) - recent)
        for notification_id in holes:
            await self._publish(await self._select(notification_id, 1))
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

    async def _publish(self, notifications: Sequence[Notification]) -> None:
        pending = []
        for notification in notifications:
            publication = publication_of(cast(OrganizationEvent, self.app.mapper.to_domain_event(notification)))
            headers = {"Nats-Msg-Id": publication.event_id, NOTIFICATION_HEADER: str(notification.id)}
            pending.append(await self.js.publish_async(publication.subject, publication.body, headers=headers))
        # An ack lost with the connection never comes: give up on the batch and resume from the stream.
        await asyncio.wait_for(asyncio.gather(*pending), timeout=ACK_TIMEOUT_SECONDS)
