"""Opaque cursors for billing's lists: a position in a list's order, validated on the way back in.

A charges cursor is the last row's (`occurred_at`, `charge_id`); an invoices cursor is the last
period's start. Anything else (garbage, another list's cursor, an instant out of range) is
`validation_error`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec

from shared import pricing
from shared.errors import Invalid

T = TypeVar("T", bound=msgspec.Struct)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MICROSECONDS = pricing.microseconds(datetime(1, 1, 2, tzinfo=UTC))
_MAX_MICROSECONDS = pricing.microseconds(datetime(9999, 12, 30, tzinfo=UTC))
_MAX_CHARGE_ID = 300


class ChargesPosition(msgspec.Struct, frozen=True, array_like=True, tag="c"):
    occurred_at_us: int
    charge_id: str


class InvoicesPosition(msgspec.Struct, frozen=True, array_like=True, tag="i"):
    period_start_us: int


def charges_cursor(occurred_at: datetime, charge_id: str) -> str:
    return _encode(ChargesPosition(pricing.microseconds(occurred_at), charge_id))


def invoices_cursor(period_start: datetime) -> str:
    return _encode(InvoicesPosition(pricing.microseconds(period_start)))


def charges_position(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:  # absent or empty: the first page
        return None
    position = _decode(cursor, ChargesPosition)
    if len(position.charge_id) > _MAX_CHARGE_ID:
        raise _not_ours()
    return _instant(position.occurred_at_us), position.charge_id


def invoices_position(cursor: str | None) -> datetime | None:
    if not cursor:  # absent or empty: the first page
        return None
    return _instant(_decode(cursor, InvoicesPosition).period_start_us)


def _encode(position: msgspec.Struct) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def _decode(cursor: str, kind: type[T]) -> T:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, RecursionError, msgspec.DecodeError, msgspec.ValidationError):
        raise _not_ours() from None


def _instant(microseconds: int) -> datetime:
    if not _MIN_MICROSECONDS <= microseconds <= _MAX_MICROSECONDS:
        raise _not_ours()
    return _EPOCH + timedelta(microseconds=microseconds)


def _not_ours() -> Invalid:
    return Invalid("cursor is not one this service gave out")
