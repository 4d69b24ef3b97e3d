"""The delivery rules, pure: a delivery's statuses, what is never mailed late, which SMTP failures
are permanent, and how long a temporary one waits.

No I/O here: `store.py` keeps deliveries in PostgreSQL, `sender.py` drives one through them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import aiosmtplib


class Status(enum.StrEnum):
    """A delivery's life: `pending` -> `sending` -> `sent`; back to `pending` after a temporary
    failure; `failed` after a permanent one; `skipped` when the invitation no longer wants it."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


Kind = Literal["invited", "resent"]
EVENT_TYPE_OF_KIND: dict[str, str] = {"invited": "MemberInvited", "resent": "InvitationResent"}

# An invitation's state as the projection knows it; the two closed ones stop every email.
InvitationState = Literal["pending", "revoked", "accepted"]
CLOSED: tuple[InvitationState, ...] = ("revoked", "accepted")

SUPERSEDED = "superseded by a later resend"
EXPIRED = "invitation expired"
MAX_ERROR_CHARS = 1000  # `last_error` and the dead letter's error header


def closed_reason(state: str) -> str:
    """Why the pending emails of a revoked or accepted invitation are skipped."""
    return f"invitation {state}"


def why_not_send(delivery: Mapping[str, object], now: datetime) -> str | None:
    """Never mailed late: the reason a due delivery must not go out at `now`, or None.

    Reads what the claim returns: the delivery's `event_id` and `expires_at`, and the invitation's
    `invitation_status` and `current_event_id` (its latest email) at this moment."""
    if delivery["invitation_status"] in CLOSED:
        return closed_reason(str(delivery["invitation_status"]))
    if delivery["current_event_id"] is not None and delivery["current_event_id"] != delivery["event_id"]:
        return SUPERSEDED
    expires_at = delivery["expires_at"]
    assert isinstance(expires_at, datetime)
    if now >= expires_at:
        return EXPIRED
    return None


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
    """The error as `last_error` keeps it: the server's code and words, at most 1000 characters, as
    text PostgreSQL takes (a server's words may hold a NUL, or bytes that are not UTF-8)."""
    return _storable(_words(error))[:MAX_ERROR_CHARS]


def _words(error: BaseException) -> str:
    if isinstance(error, PermanentFailure):
        return str(error)
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{r.code} {r.message}" for r in error.recipients)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}"
    return f"{type(error).__name__}: {error}"


def _storable(text: str) -> str:
    # replies are decoded with `surrogateescape`: a byte that is not UTF-8 is a lone surrogate here
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def backoff(attempts: int, base_seconds: float, max_seconds: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2*base, 4*base... capped."""
    return min(max_seconds, base_seconds * float(2 ** max(0, min(attempts - 1, 30))))
