"""Billing's cursors: what it gave out reads back; anything else is one `invalid` refusal, never an error."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.billing.paging import charges_cursor, charges_position, invoices_cursor, invoices_position
from shared.errors import Invalid


def test_a_cursor_given_out_reads_back() -> None:
    at = datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC)
    assert charges_position(charges_cursor(at, "chg_1")) == (at, "chg_1")
    assert invoices_position(invoices_cursor(at)) == at


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        b'["i",1,' + b"[" * 1500 + b"]" * 1500 + b"]",  # found by review: msgspec's RecursionError was `internal`
        b'["i","\xff"]',
        b'["c",1]',
        b"",
    ],
)
def test_a_cursor_it_did_not_give_out_is_refused(raw: bytes) -> None:
    for position in (charges_position, invoices_position):
        with pytest.raises(Invalid, match="cursor is not one this service gave out"):
            position(_cursor(raw) or "x")


@given(st.text(max_size=200))
def test_any_text_as_a_cursor_reads_as_a_position_or_is_refused_as_invalid(cursor: str) -> None:
    outcomes = []
    for position in (charges_position, invoices_position):
        try:
            outcomes.append(position(cursor))
        except Invalid:
            outcomes.append("refused")
    charges, invoices = outcomes
    assert charges in (None, "refused") or (isinstance(charges[0], datetime) and isinstance(charges[1], str))
    assert invoices in (None, "refused") or isinstance(invoices, datetime)
    assert (charges is None) == (invoices is None) == (not cursor)
