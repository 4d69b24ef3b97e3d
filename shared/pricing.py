"""The contract's pricing rule: monthly billing periods from an anchor, integer proration.

All datetimes are timezone-aware UTC; money is integer cents; no floats anywhere.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

UNIT_PRICE_CENTS = 1000
INCLUDED_SEATS = {"free": 1, "pro": 3, "enterprise": 3}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by whole calendar months, clamped to the month's last day."""
    month_index = anchor.month - 1 + months
    year, month = anchor.year + month_index // 12, month_index % 12 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def billing_period(anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
    """The period [start, end) that contains `at`, period k starting at anchor + k months."""
    _require_utc(anchor, at)
    if type(anchor.tzinfo) is not timezone:
        return _period_containing(anchor, at)
    last = _last_period.get(anchor)
    if last is not None and last[0] <= at < last[1]:
        return last
    period = _period_containing(anchor, at)
    if len(_last_period) >= _LAST_PERIODS:
        _last_period.clear()
    _last_period[anchor] = period
    return period


# The period last found for each anchor: an organization's commands fall in its current period,
# and finding it walks the calendar (a third of an invitation's decision that buys a seat).
# Only anchors at the fixed offset 0 (`datetime.UTC`, what msgspec and asyncpg give) are remembered:
# aware datetimes are equal and hash alike by instant, whatever their zone, and a zone at offset 0 on
# the anchor's day only (Europe/London in winter) counts its periods on its own calendar.
_LAST_PERIODS = 10_000
_last_period: dict[datetime, tuple[datetime, datetime]] = {}


def _period_containing(anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    while add_months(anchor, months) > at:
        months -= 1
    while add_months(anchor, months + 1) <= at:
        months += 1
    return add_months(anchor, months), add_months(anchor, months + 1)


def period_starts(anchor: datetime, after: datetime, until: datetime) -> list[datetime]:
    """Every period start s with after < s <= until (period k >= 1 starts at anchor + k months).

    Counted from the period holding `after`, not walked from the anchor: an organization years
    old would otherwise pay a month of the walk for every month of its age on each event."""
    # Start k falls in the month of `after` (in the anchor's calendar) or the one before; `after` read in
    # another zone can name the next month, so begin one period earlier and step forward (two steps at most).
    k = max(1, (after.year - anchor.year) * 12 + (after.month - anchor.month) - 1)
    while add_months(anchor, k) <= after:
        k += 1
    starts = []
    while (start := add_months(anchor, k)) <= until:
        starts.append(start)
        k += 1
    return starts


def microseconds(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def prorate(unit_price_cents: int, quantity: int, start: datetime, end: datetime, at: datetime) -> int:
    """round_half_up(unit * quantity * (end - at) / (end - start)) in integers."""
    _require_utc(start, end, at)
    if not start <= at < end:
        raise ValueError("`at` must lie within [start, end)")
    numerator = unit_price_cents * quantity * (microseconds(end) - microseconds(at))
    denominator = microseconds(end) - microseconds(start)
    return (2 * numerator + denominator) // (2 * denominator)


def _require_utc(*moments: datetime) -> None:
    for moment in moments:
        if moment.tzinfo is UTC:  # what msgspec and asyncpg give: no offset to ask for
            continue
        if moment.tzinfo is None or moment.utcoffset() != timedelta(0):
            raise ValueError(f"expected a timezone-aware UTC datetime, got {moment!r}")
