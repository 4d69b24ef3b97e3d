"""Sending the invitation emails the projection recorded, outside of its transaction.

One delivery at a time per sender: in one short transaction, take the oldest due row
(`FOR UPDATE SKIP LOCKED`, so several senders never take the same one), check the invitation
at this moment, and mark it `sending` with one more attempt; commit; only then talk to SMTP;
then mark the row `sent`, back to `pending` with a backoff (temporary failure), or `failed`
(permanent failure, published to `deadletter.notifier`).

Exactly once is impossible: a crash after the SMTP server took the message and before `sent` is
committed leaves the row in `sending`, and after `sending_timeout_seconds` it is sent again, with
the same Message-ID. That is the only window for a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from datetime import datetime, timedelta
from typing import Any

import aiosmtplib
import asyncpg
import msgspec
import structlog

from shared import subjects
from shared.clock import Clock
from shared.errors import Conflict

from .config import NotifierSettings
from .headers import UnmailableAddress
from .mail import Invitation, OutgoingEmail, compose
from .projection import WAKE_CHANNEL
from .smtp import SmtpUrl

log = structlog.get_logger()

# Held shared by every send in progress (claim -> SMTP -> mark), exclusively by a rebuild's swap.
SENDING_LOCK = zlib.crc32(b"notifier.sending")
DELIVERY_DEAD_LETTER = "delivery"  # header Dead-Letter-Kind: a refused email, not an unapplied event
EVENT_TYPE_OF_KIND = {"invited": "MemberInvited", "resent": "InvitationResent"}


class PermanentFailure(Exception):
    """The server refused this message for good (5xx to RCPT or DATA), or it cannot be written."""


def is_permanent(error: BaseException) -> bool:
    """5xx answers about this message are permanent; anything about the server or the connection
    (refused, timeouts, 4xx, and also a 5xx to EHLO, STARTTLS, AUTH or MAIL FROM, which would fail
    every message alike until someone fixes the configuration) is temporary."""
    if isinstance(error, PermanentFailure):
        return True
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(r.code >= 500 for r in error.recipients)
    if isinstance(error, (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError)):
        return error.code >= 500
    return False


def describe(error: BaseException) -> str:
    if isinstance(error, PermanentFailure):
        return str(error)[:1000]
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.code} {r.message}" for r in error.recipients)[:1000]
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}"[:1000]
    return f"{type(error).__name__}: {error}"[:1000]


class Mailer:
    """One SMTP connection, kept while there is mail to send and closed when idle."""

    def __init__(self, url: SmtpUrl, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._client: aiosmtplib.SMTP | None = None

    async def send(self, email: OutgoingEmail) -> None:
        reused = self._client is not None and self._client.is_connected
        try:
            await self._send(email)
        except aiosmtplib.SMTPServerDisconnected:
            await self.close()
            if not reused:
                raise
            await self._send(email)  # the server dropped an idle connection; once more, on a new one
        except BaseException:
            await self.close()
            raise

    async def _send(self, email: OutgoingEmail) -> None:
        if self._client is None or not self._client.is_connected:
            client = aiosmtplib.SMTP(**self.url.client_options(self.timeout))
            await client.connect()
            self._client = client
        # the envelope is given, never extracted from the headers
        await self._client.send_message(email.message, sender=email.envelope_from, recipients=[email.envelope_to])

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await asyncio.wait_for(client.quit(), timeout=2)
        except Exception:
            client.close()


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: Any,
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
        self.schema = schema
        self.mailer = mailer
        self.settings = settings
        self.clock = clock
        self.public_url = public_url
        self._server_secret = server_secret
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Sends until `stop` is set; wakes on the projection's NOTIFY, or every `poll_seconds`."""
        try:
            while not stop.is_set():
                busy = False
                try:
                    await self._listen()
                    busy = await self.send_next()
                    await self.publish_dead_letters()
                except Exception:
                    log.exception("sender step failed; trying again")
                    await self.mailer.close()
                    await _wait(stop, None, 1.0)
                    continue
                if not busy:
                    await self.mailer.close()
                    await _wait(stop, self._wake, self.settings.poll_seconds)
                    self._wake.clear()
        finally:
            await self.mailer.close()
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close(timeout=2)

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

    async def send_next(self) -> bool:
        """Takes the oldest due delivery and settles it; False when none is due."""
        async with self.pool.acquire() as connection:
            await connection.execute("SELECT pg_advisory_lock_shared($1)", SENDING_LOCK)
            try:
                return await self._send_one(connection)
            finally:
                await connection.execute("SELECT pg_advisory_unlock_shared($1)", SENDING_LOCK)

    async def _send_one(self, connection: asyncpg.Connection) -> bool:
        now = self.clock.now()
        async with connection.transaction():
            row = await self._claim(connection, now)
            if row is None:
                return False
            reason = why_not_send(row, now)
            if reason is not None:
                await connection.execute(
                    f"""UPDATE "{self.schema}".deliveries SET status = 'skipped', reason = $2 WHERE event_id = $1""",
                    row["event_id"],
                    reason,
                )
                log.info("delivery skipped", event_id=row["event_id"], org_id=row["org_id"], reason=reason)
                return True
            await connection.execute(
                f"""UPDATE "{self.schema}".deliveries
                    SET status = 'sending', attempts = attempts + 1, claimed_at = $2 WHERE event_id = $1""",
                row["event_id"],
                now,
            )
        attempt = row["attempts"] + 1
        try:
            message = self._compose(row, now)
            async with asyncio.timeout(self.settings.smtp_timeout_seconds):
                await self.mailer.send(message)
        except Exception as error:
            await self._settle_failure(connection, row, attempt, error)
        else:
            await connection.execute(
                f"""UPDATE "{self.schema}".deliveries SET status = 'sent', sent_at = $2, last_error = NULL
                    WHERE event_id = $1""",
                row["event_id"],
                self.clock.now(),
            )
            log.info("invitation email sent", event_id=row["event_id"], org_id=row["org_id"], attempt=attempt)
        return True

    async def _claim(self, connection: asyncpg.Connection, now: datetime) -> asyncpg.Record | None:
        stale = now - timedelta(seconds=self.settings.sending_timeout_seconds)
        return await connection.fetchrow(
            f"""SELECT d.*, i.status AS invitation_status, i.current_event_id
                FROM "{self.schema}".deliveries AS d
                LEFT JOIN "{self.schema}".invitations AS i ON i.invitation_id = d.invitation_id
                WHERE d.event_id = (
                    SELECT event_id FROM "{self.schema}".deliveries
                    WHERE (status = 'pending' AND next_attempt_at <= $1) OR (status = 'sending' AND claimed_at <= $2)
                    ORDER BY occurred_at, event_id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)""",
            now,
            stale,
        )

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

    async def _settle_failure(self, connection: asyncpg.Connection, row: asyncpg.Record, attempt: int, error: BaseException) -> None:
        description = describe(error)
        if is_permanent(error):
            await connection.execute(
                f"""UPDATE "{self.schema}".deliveries SET status = 'failed', last_error = $2, dead_lettered = false
                    WHERE event_id = $1""",
                row["event_id"],
                description,
            )
            log.error("invitation email refused for good", event_id=row["event_id"], org_id=row["org_id"], error=description)
            return
        delay = self.settings.backoff(attempt)
        await connection.execute(
            f"""UPDATE "{self.schema}".deliveries SET status = 'pending', last_error = $2, next_attempt_at = $3
                WHERE event_id = $1""",
            row["event_id"],
            description,
            self.clock.now() + timedelta(seconds=delay),
        )
        log.warning(
            "invitation email not sent; will retry",
            event_id=row["event_id"],
            org_id=row["org_id"],
            attempt=attempt,
            retry_in_seconds=delay,
            error=description,
        )

    async def publish_dead_letters(self) -> int:
        """Failed deliveries not yet on `deadletter.notifier` (Nats-Msg-Id makes a repeat harmless)."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT event_id, org_id, invitation_id, kind, recipient, attempts, last_error
                    FROM "{self.schema}".deliveries WHERE status = 'failed' AND NOT dead_lettered
                    ORDER BY event_id LIMIT 100"""
            )
            for row in rows:
                await self._dead_letter(row)
                await connection.execute(
                    f'UPDATE "{self.schema}".deliveries SET dead_lettered = true WHERE event_id = $1', row["event_id"]
                )
        return len(rows)

    async def _dead_letter(self, row: asyncpg.Record) -> None:
        event_type = EVENT_TYPE_OF_KIND[row["kind"]]
        error = row["last_error"] or ""
        headers = {
            "Nats-Msg-Id": f"notifier:{row['event_id']}",
            "Dead-Letter-Service": "notifier",
            "Dead-Letter-Error": error[:1000],
            "Original-Subject": subjects.event(row["org_id"], event_type),
            "Original-Event-Id": row["event_id"],
            "Dead-Letter-Kind": DELIVERY_DEAD_LETTER,
        }
        body = {
            "event_id": row["event_id"],
            "event_type": event_type,
            "org_id": row["org_id"],
            "invitation_id": row["invitation_id"],
            "to": row["recipient"],
            "attempts": row["attempts"],
            "error": error,
        }
        await self.js.publish(subjects.dead_letter("notifier"), msgspec.json.encode(body), headers=headers)
        log.error("dead-lettered", event_id=row["event_id"], org_id=row["org_id"], error=error)


    async def retry_failed(self, event_id: str) -> None:
        """An operator's retry of a failed delivery: pending again, due now (still checked at send time)."""
        async with self.pool.acquire() as connection:
            status = await connection.execute(
                f"""UPDATE "{self.schema}".deliveries SET status = 'pending', next_attempt_at = $2, dead_lettered = false
                    WHERE event_id = $1 AND status = 'failed'""",
                event_id,
                self.clock.now(),
            )
        if status.split()[-1] == "0":
            raise Conflict(f"delivery {event_id} is not failed")
        self._wake.set()


def why_not_send(row: asyncpg.Record | dict[str, Any], now: datetime) -> str | None:
    """The reason a due delivery must not go out at `now`, or None."""
    if row["invitation_status"] in ("revoked", "accepted"):
        return f"invitation {row['invitation_status']}"
    if row["current_event_id"] is not None and row["current_event_id"] != row["event_id"]:
        return "superseded by a later resend"
    if now >= row["expires_at"]:
        return "invitation expired"
    return None


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
