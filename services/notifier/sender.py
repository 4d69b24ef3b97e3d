"""Sending the invitation emails the projection recorded, outside of its transaction.

A batch at a time per sender: in one statement, take the oldest due rows (`FOR UPDATE SKIP
LOCKED`, so several senders never take the same one) and mark them `sending` with one more attempt
and `claimed_at` = the claim's instant; check each invitation as the claim found it
(`deliveries.why_not_send`) and give back as `skipped` those that must not go out; only then talk to
SMTP, one message at a time. Each row
is checked against its invitation again just before its email goes out (the statement settling
the previous row reads it: no round trip of its own), and skipped if it was revoked, accepted or
superseded meanwhile. After each send, its row is marked `sent`, back to `pending` with a backoff
(temporary failure: the rest of the batch goes back to `pending` untried), or `failed` (permanent
failure, published to `deadletter.notifier`). Every settlement and release matches the claim's
`claimed_at`: a sender never touches a row another sender has taken over after the timeout.

Exactly once is impossible: a crash after the SMTP server took the message and before `sent` is
committed leaves the row in `sending`, and after `sending_timeout_seconds` it is sent again, with
the same Message-ID. The other window is SMTP's own (RFC 5321, 6.1): a connection lost after the
message's final dot and before the server's reply, where the message may have been taken; it is sent
again, at once on a new connection (`smtp.Mailer`) or later. Those are the only windows for a duplicate.

The rules are in `deliveries.py`, the SQL in `store.py`, the email in `mail.py`, SMTP in `smtp.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext

from shared import dead_letters, subjects, telemetry
from shared.clock import Clock
from shared.errors import Conflict

from .config import NotifierSettings
from .deliveries import EVENT_TYPE_OF_KIND, PermanentFailure, describe, is_permanent, why_not_send
from .headers import UnmailableAddress
from .mail import Invitation, OutgoingEmail, compose
from .projection import WAKE_CHANNEL
from .store import DeliveryStore, InvitationNow, Settled

log = structlog.get_logger()

DELIVERY_DEAD_LETTER = "delivery"  # Dead-Letter-Kind of a refused email, not an unapplied event


class Mailer(Protocol):
    """What the sender needs of SMTP (`smtp.Mailer`, or a recording one in tests)."""

    async def send(self, email: OutgoingEmail) -> None: ...

    async def close(self) -> None: ...


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        schema: str,
        mailer: Mailer,
        settings: NotifierSettings,
        clock: Clock,
        *,
        public_url: str,
        server_secret: str,
        database_url: str,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.js = js
        self.deliveries = DeliveryStore(schema)
        self.mailer = mailer
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self._server_secret = server_secret
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._refused_since_look = True  # what a previous run left is looked for at the start
        self._next_dead_letter_look = 0.0  # the event loop's clock

    async def run(self, stop: asyncio.Event) -> None:
        """Sends until `stop` is set; wakes on the projection's NOTIFY, or every `poll_seconds`.

        The SMTP connection stays open while mail keeps coming: it is closed after a quiet
        `poll_seconds`, not after every batch (a new one costs a connect, an EHLO and a QUIT)."""
        try:
            while not stop.is_set():
                busy = False
                try:
                    await self._listen()
                    busy = await self._send_while_due(stop)
                    if self._dead_letters_due():
                        await self.publish_dead_letters()
                except Exception:
                    log.exception("sender step failed; trying again")
                    await self.mailer.close()
                    await _wait(stop, None, 1.0)
                    continue
                if not busy:
                    await _wait(stop, self._wake, self.settings.poll_seconds)
                    if not self._wake.is_set():
                        await self.mailer.close()
                    self._wake.clear()
        finally:
            await self.mailer.close()
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=2)

    async def _send_while_due(self, stop: asyncio.Event) -> bool:
        """Batch after batch on one pooled connection (no pool round trip per batch) until none is
        due; True when it stopped with rows perhaps still due (the dead letters' turn came first)."""
        async with self.pool.acquire() as connection:
            while not stop.is_set():
                if not await self._send_batch(connection, self.settings.send_batch):
                    return False
                if self._dead_letters_due():
                    return True
        return False

    def _dead_letters_due(self) -> bool:
        """After a refusal of our own at once; else at most every `poll_seconds` (a failed row left
        by a crash, another instance, or a rebuild's carry-over), not a query after every batch."""
        return self._refused_since_look or asyncio.get_running_loop().time() >= self._next_dead_letter_look

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        # a connection of its own for the service's lifetime; a broken one is replaced next step
        connection = await asyncpg.connect(self.database_url)
        try:
            await connection.add_listener(WAKE_CHANNEL, lambda *_: self._wake.set())
        except BaseException:
            await connection.close()
            raise
        self._listener = connection
        self._wake.set()  # what was committed while nobody listened

    async def send_next(self, limit: int = 1) -> bool:
        """Takes up to `limit` of the oldest due deliveries and settles each; False when none is due.

        They are claimed together, in one transaction, and sent one at a time, each settled as soon
        as SMTP has answered: a crash leaves at most the one being sent to go out twice, and the rest
        in `sending`, to be taken again after `sending_timeout_seconds` (never sent, so never doubled)."""
        async with self.pool.acquire() as connection:
            return await self._send_batch(connection, limit)

    async def _send_batch(self, connection: asyncpg.Connection, limit: int) -> bool:
        async with self.deliveries.sending(connection):
            now = self.clock.now()
            claimed, to_send = await self._claim(connection, now, limit)
            await self._send_claimed(connection, to_send, now)
            return claimed

    async def _send_claimed(self, connection: asyncpg.Connection, to_send: list[asyncpg.Record], claimed_at: datetime) -> None:
        """Sends the claimed rows in order, each checked against its invitation just before it goes
        out: the claim checked the first, and each settlement brings back the next row's invitation
        as it is now (in the same statement). Stops at a temporary failure, at the deadline, or at a
        row that is no longer this claim's; the rows not tried go back to `pending`."""
        # A claimed row must be settled before `sending_timeout_seconds`, or another sender would
        # take it over while it is still on its way: past this instant, the rest go back unsent.
        last_start = claimed_at + timedelta(seconds=self.settings.sending_timeout_seconds - self.settings.smtp_timeout_seconds)
        settled: Settled | None = None  # the previous row's settlement; None before the first
        for position, row in enumerate(to_send):
            following = to_send[position + 1]["event_id"] if position + 1 < len(to_send) else None
            if settled is not None:
                if settled.following is None:  # taken over: too late for the rest
                    await self.deliveries.release(connection, _event_ids(to_send[position:]), claimed_at)
                    return
                reason = why_not_send(_as_checked(row, settled.following), self.clock.now())
                if reason is not None:
                    settled = await self.deliveries.skip_claimed(connection, row["event_id"], claimed_at, reason, following)
                    telemetry.delivery_settled("skipped")
                    log.info("delivery skipped", event_id=row["event_id"], org_id=row["org_id"], reason=reason)
                    continue
            if self.clock.now() >= last_start:
                await self.deliveries.release(connection, _event_ids(to_send[position:]), claimed_at)
                return
            settled = await self._send_one(connection, row, claimed_at, following)
            if settled is None:  # the server's trouble, most likely: the rest of the batch had better wait too
                await self.deliveries.release(connection, _event_ids(to_send[position + 1 :]), claimed_at)
                return

    async def _claim(self, connection: asyncpg.Connection, now: datetime, limit: int) -> tuple[bool, list[asyncpg.Record]]:
        """The due rows, claimed in one statement (`sending`, one more attempt, `claimed_at` = `now`) and
        checked against their invitations as the claim found them: those that must not go out are
        given back as `skipped` (their attempt with them). (any claimed, to send)"""
        stale_before = now - timedelta(seconds=self.settings.sending_timeout_seconds)
        rows = await self.deliveries.claim(connection, now, stale_before, limit)
        to_send = []
        for row in rows:
            reason = why_not_send(row, now)
            if reason is None:
                to_send.append(row)
                continue
            await self.deliveries.skip_claimed(connection, row["event_id"], now, reason, None)
            telemetry.delivery_settled("skipped")
            log.info("delivery skipped", event_id=row["event_id"], org_id=row["org_id"], reason=reason)
        return bool(rows), to_send

    async def _send_one(
        self, connection: asyncpg.Connection, row: asyncpg.Record, claimed_at: datetime, following: str | None
    ) -> Settled | None:
        """Sends one claimed delivery and records how it went (looking at the `following` row of the
        batch in the same statement); None after a temporary failure."""
        attempt = row["attempts"]  # the claim counted this one
        try:
            message = self._compose(row, claimed_at)
            async with asyncio.timeout(self.settings.smtp_timeout_seconds):
                await self.mailer.send(message)
        except Exception as error:
            return await self._settle_failure(connection, row, claimed_at, attempt, error, following)
        settled = await self.deliveries.mark_sent(connection, row["event_id"], claimed_at, self.clock.now(), following)
        if not settled.held:
            log.warning("invitation email sent after another sender took it over", event_id=row["event_id"], org_id=row["org_id"])
            return settled
        telemetry.delivery_settled("sent")
        log.info("invitation email sent", event_id=row["event_id"], org_id=row["org_id"], attempt=attempt)
        return settled

    def _compose(self, row: asyncpg.Record, now: datetime) -> OutgoingEmail:
        invitation = Invitation(
            event_id=row["event_id"],
            invitation_id=row["invitation_id"],
            recipient=row["recipient"],
            org_name=row["org_name"],
            inviter=row["inviter"],
            expires_at=row["expires_at"],
            resent=row["kind"] == "resent",
        )
        try:
            return compose(
                invitation,
                mail_from=self.settings.mail_from,
                public_url=self.public_url,
                server_secret=self._server_secret,
                now=now,
            )
        except UnmailableAddress as unmailable:
            raise PermanentFailure(f"the stored recipient cannot be mailed: {unmailable}") from unmailable
        except Exception as error:
            raise PermanentFailure(f"the email cannot be written: {type(error).__name__}: {error}") from error

    async def _settle_failure(
        self,
        connection: asyncpg.Connection,
        row: asyncpg.Record,
        claimed_at: datetime,
        attempt: int,
        error: BaseException,
        following: str | None,
    ) -> Settled | None:
        """Records a failed attempt: settled when it was this message's failure for good, None when it
        was the server's (temporary). A row another sender has taken over is left to it."""
        description = describe(error)
        if is_permanent(error):
            settled = await self.deliveries.mark_failed(connection, row["event_id"], claimed_at, description, following)
            if not settled.held:
                log.warning("invitation email refused after another sender took it over", event_id=row["event_id"])
                return settled
            self._refused_since_look = True
            telemetry.delivery_settled("failed")
            log.error("invitation email refused for good", event_id=row["event_id"], org_id=row["org_id"], error=description)
            return settled
        delay = self.settings.backoff(attempt)
        retry_at = self.clock.now() + timedelta(seconds=delay)
        if not await self.deliveries.retry_later(connection, row["event_id"], claimed_at, description, retry_at):
            log.warning("invitation email failed after another sender took it over", event_id=row["event_id"])
            return None
        telemetry.delivery_settled("retry")
        log.warning(
            "invitation email not sent; will retry",
            event_id=row["event_id"],
            org_id=row["org_id"],
            attempt=attempt,
            retry_in_seconds=delay,
            error=description,
        )
        return None

    async def publish_dead_letters(self) -> int:
        """Failed deliveries not yet on `deadletter.notifier` (Nats-Msg-Id makes a repeat harmless)."""
        self._refused_since_look = False
        self._next_dead_letter_look = asyncio.get_running_loop().time() + self.settings.poll_seconds
        async with self.pool.acquire() as connection:
            rows = await self.deliveries.not_yet_dead_lettered(connection)
            for row in rows:
                await dead_letters.publish(self.js, dead_letter_of(row))
                log.error("dead-lettered", event_id=row["event_id"], org_id=row["org_id"], error=row["last_error"] or "")
                await self.deliveries.mark_dead_lettered(connection, row["event_id"])
        return len(rows)

    async def retry_failed(self, event_id: str) -> None:
        """An operator's retry of a failed delivery: pending again, due now (still checked at send time)."""
        async with self.pool.acquire() as connection:
            retried = await self.deliveries.retry_failed(connection, event_id, self.clock.now())
        if not retried:
            raise Conflict(f"delivery {event_id} is not failed")
        self._wake.set()

    async def retry_dead_letter(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The dead-letter desk's retry of a `delivery` letter: its delivery goes back to `pending`."""
        event_id = headers[dead_letters.ORIGINAL_EVENT_ID]
        await self.retry_failed(event_id)
        return {"event_id": event_id}


def dead_letter_of(row: asyncpg.Record) -> dead_letters.DeadLetter:
    """A failed delivery as the letter operators see: the delivery described, keyed by its event."""
    event_type = EVENT_TYPE_OF_KIND[row["kind"]]
    error = row["last_error"] or ""
    body = {
        "event_id": row["event_id"],
        "event_type": event_type,
        "org_id": row["org_id"],
        "invitation_id": row["invitation_id"],
        "to": row["recipient"],
        "attempts": row["attempts"],
        "error": error,
    }
    return dead_letters.DeadLetter(
        service="notifier",
        kind=DELIVERY_DEAD_LETTER,
        key=row["event_id"],
        error=error,
        original_subject=subjects.event(row["org_id"], event_type),
        body=msgspec.json.encode(body),
        original_event_id=row["event_id"],
    )


def _event_ids(rows: list[asyncpg.Record]) -> list[str]:
    return [row["event_id"] for row in rows]


def _as_checked(row: asyncpg.Record, invitation: InvitationNow) -> dict[str, object]:
    """A claimed row with its invitation as it is now, as `why_not_send` reads it."""
    return {
        "event_id": row["event_id"],
        "expires_at": row["expires_at"],
        "invitation_status": invitation.status,
        "current_event_id": invitation.current_event_id,
    }


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
