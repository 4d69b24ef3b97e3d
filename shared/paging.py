"""Opaque cursors over a list ordered by (instant, id): every list a query returns is paged.

A cursor names the last item of the previous page. It is checked as hostile input: anything that
is not a cursor this code wrote is `validation_error`, never a crash.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from .errors import Invalid

T = TypeVar("T")
V = TypeVar("V")
# NATS' default max_payload is 1 MB: a page of 512 kB leaves room for the envelope and JSON escapes.
PAGE_BUDGET_BYTES = 512 * 1024
Position = tuple[int, str]
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_POSITION = 2**63 - 1
_decoder = msgspec.json.Decoder(tuple[int, str])


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise Invalid("cursor is not one this service issued", field="cursor") from None
    if not (-_MAX_POSITION <= at <= _MAX_POSITION) or not _ID.fullmatch(item_id):
        raise Invalid("cursor is not one this service issued", field="cursor")
    return at, item_id


MAX_BIGINT = 2**63 - 1  # a PostgreSQL bigint: the largest sequence a cursor may name


def sequence_cursor(label: str, sequence: int) -> str:
    """An opaque cursor after `sequence` in a list ordered by a bigint sequence; `label` names the list."""
    return base64.urlsafe_b64encode(f"{label}:{sequence}".encode()).decode()


def sequence_after(label: str, cursor: str | None) -> int:
    """The sequence a `sequence_cursor(label, ...)` continues after (0 without a cursor); anything
    this service could not have given out is `Invalid`, never a crash."""
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (ValueError, UnicodeError):
        text = ""
    digits = text.removeprefix(f"{label}:") if text.startswith(f"{label}:") else ""
    canonical = digits.isascii() and digits.isdigit() and len(digits) <= 19
    if canonical and int(digits) <= MAX_BIGINT and sequence_cursor(label, int(digits)) == cursor:
        return int(digits)
    raise Invalid("cursor is not one this service gave out")


def page(
    items: Sequence[T],
    position_of: Callable[[T], Position],
    cursor: str | None,
    limit: int,
    view: Callable[[T], V],
    budget_bytes: int = PAGE_BUDGET_BYTES,
) -> tuple[list[V], str | None]:
    """Up to `limit` items after the cursor, in order, as views, and the cursor of the next page (None on
    the last). A page also ends before its views pass `budget_bytes` of JSON, so that a reply always
    fits the bus, whatever the items hold (a page has at least one item)."""
    after = decode_cursor(cursor) if cursor else None
    ordered = sorted(items, key=position_of)
    if after is not None:
        ordered = [item for item in ordered if position_of(item) > after]
    chosen: list[V] = []
    size = 0
    for item in ordered[:limit]:
        shown = view(item)
        size += len(msgspec.json.encode(shown)) + 1
        if chosen and size > budget_bytes:
            break
        chosen.append(shown)
    more = len(ordered) > len(chosen)
    return chosen, encode_cursor(position_of(ordered[len(chosen) - 1])) if more and chosen else None
