"""The contract's pricing rule: calendar-month billing periods and integer half-up proration."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pricing import add_months, billing_period, period_starts, prorate

UTC = UTC


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- the calendar rule --------------------------------------------------------------


def test_anchor_on_the_31st_falls_back_to_february_28_in_a_common_year() -> None:
    anchor = at(2023, 1, 31, 10, 15, 30, 123456)

    assert billing_period(anchor, at(2023, 2, 15)) == (anchor, at(2023, 2, 28, 10, 15, 30, 123456))
    assert billing_period(anchor, at(2023, 3, 1)) == (at(2023, 2, 28, 10, 15, 30, 123456), at(2023, 3, 31, 10, 15, 30, 123456))


def test_anchor_on_the_31st_falls_back_to_february_29_in_a_leap_year_then_returns_to_the_31st() -> None:
    anchor = at(2024, 1, 31, 8)

    assert billing_period(anchor, at(2024, 2, 29, 7, 59)) == (at(2024, 1, 31, 8), at(2024, 2, 29, 8))
    assert billing_period(anchor, at(2024, 2, 29, 8)) == (at(2024, 2, 29, 8), at(2024, 3, 31, 8))
    assert billing_period(anchor, at(2024, 4, 1)) == (at(2024, 3, 31, 8), at(2024, 4, 30, 8))


def test_periods_are_counted_from_the_anchor_not_chained_from_the_previous_short_month() -> None:
    anchor = at(2023, 1, 31, 0)

    # after Feb 28 and Apr 30, the period still starts on the 31st where the month has one
    assert billing_period(anchor, at(2023, 5, 31, 0)) == (at(2023, 5, 31), at(2023, 6, 30))
    assert billing_period(anchor, at(2023, 7, 1)) == (at(2023, 6, 30), at(2023, 7, 31))


def test_add_months_clamps_to_the_last_day_of_the_month_and_keeps_the_time_of_day() -> None:
    anchor = at(2024, 1, 31, 23, 59, 59, 999999)

    assert add_months(anchor, 1) == at(2024, 2, 29, 23, 59, 59, 999999)
    assert add_months(anchor, 2) == at(2024, 3, 31, 23, 59, 59, 999999)
    assert add_months(anchor, 13) == at(2025, 2, 28, 23, 59, 59, 999999)


def test_the_time_of_day_of_the_anchor_is_kept_for_every_period() -> None:
    anchor = at(2024, 3, 10, 17, 45, 12, 500)

    start, end = billing_period(anchor, at(2024, 11, 2, 3))

    assert (start, end) == (at(2024, 10, 10, 17, 45, 12, 500), at(2024, 11, 10, 17, 45, 12, 500))


def test_an_instant_equal_to_a_period_start_belongs_to_that_period() -> None:
    anchor = at(2024, 3, 10, 9, 30)

    assert billing_period(anchor, anchor) == (anchor, at(2024, 4, 10, 9, 30))
    assert billing_period(anchor, at(2024, 4, 10, 9, 30)) == (at(2024, 4, 10, 9, 30), at(2024, 5, 10, 9, 30))


def test_an_instant_equal_to_a_period_end_belongs_to_the_next_period_and_one_microsecond_before_does_not() -> None:
    anchor = at(2024, 3, 10, 9, 30)
    end = at(2024, 4, 10, 9, 30)

    assert billing_period(anchor, end)[0] == end
    assert billing_period(anchor, end - timedelta(microseconds=1)) == (anchor, end)


def test_periods_roll_over_from_december_into_january_of_the_next_year() -> None:
    assert billing_period(at(2023, 12, 15, 6), at(2024, 1, 1)) == (at(2023, 12, 15, 6), at(2024, 1, 15, 6))
    # anchor Nov 30: Dec 30 then Jan 30, across the year
    assert billing_period(at(2023, 11, 30, 6), at(2024, 1, 10)) == (at(2023, 12, 30, 6), at(2024, 1, 30, 6))
    assert billing_period(at(2023, 12, 31, 6), at(2024, 1, 31, 5)) == (at(2023, 12, 31, 6), at(2024, 1, 31, 6))


@pytest.mark.parametrize(
    "anchor, moment",
    [
        (datetime(2024, 1, 31), at(2024, 2, 1)),
        (at(2024, 1, 31), datetime(2024, 2, 1)),
    ],
    ids=["naive anchor", "naive instant"],
)
def test_billing_period_rejects_naive_datetimes(anchor: datetime, moment: datetime) -> None:
    with pytest.raises((ValueError, TypeError)):
        billing_period(anchor, moment)


# -- proration ------------------------------------------------------------------------

# A 30-day period: d = 2_592_000_000_000 microseconds.
START = at(2024, 4, 10, 9, 30)
END = at(2024, 5, 10, 9, 30)
# 1000 * r / d == 122.5 exactly when r = 122.5 * d / 1000 = 317_520_000_000 microseconds.
EXACT_HALF_REMAINING = timedelta(microseconds=317_520_000_000)


def test_an_exact_half_cent_rounds_up() -> None:
    assert micros(END - START) * 1225 == micros(EXACT_HALF_REMAINING) * 10_000  # the construction really is x.5

    # 122.5 -> 123 (half-up; floor and banker's rounding would both give 122)
    assert prorate(1000, 1, START, END, END - EXACT_HALF_REMAINING) == 123


def test_just_below_a_half_cent_rounds_down() -> None:
    moment = END - EXACT_HALF_REMAINING + timedelta(microseconds=1)  # 122.49999996...

    assert prorate(1000, 1, START, END, moment) == 122


def test_just_above_a_half_cent_rounds_up() -> None:
    moment = END - EXACT_HALF_REMAINING - timedelta(microseconds=1)  # 122.50000004...

    assert prorate(1000, 1, START, END, moment) == 123


def test_an_exact_half_with_quantity_rounds_up_once_on_the_total_not_per_seat() -> None:
    # 3 seats: 3000 * r / d == 122.5 when r = 122.5 * d / 3000 = 105_840_000_000
    moment = END - timedelta(microseconds=105_840_000_000)

    assert prorate(1000, 3, START, END, moment) == 123


def test_a_change_at_the_period_start_costs_the_full_period() -> None:
    assert prorate(1000, 1, START, END, START) == 1000
    assert prorate(1000, 7, START, END, START) == 7000


def test_half_of_a_february_in_a_common_and_a_leap_year_costs_half() -> None:
    common_start, common_end = billing_period(at(2023, 1, 31), at(2023, 2, 10))  # Jan 31 -> Feb 28: 28 days
    leap_start, leap_end = billing_period(at(2024, 1, 31), at(2024, 2, 10))  # Jan 31 -> Feb 29: 29 days

    assert prorate(1000, 2, common_start, common_end, common_start + timedelta(days=14)) == 1000
    assert prorate(1000, 2, leap_start, leap_end, leap_start + timedelta(days=14, hours=12)) == 1000


def test_a_seat_bought_sixteen_days_before_the_end_of_a_31_day_period() -> None:
    start, end = at(2024, 3, 10, 9, 30), at(2024, 4, 10, 9, 30)

    # 1000 * 16 / 31 = 516.13 -> 516
    assert prorate(1000, 1, start, end, end - timedelta(days=16)) == 516


def test_proration_is_an_integer_and_matches_exact_rational_half_up_rounding() -> None:
    rng = random.Random(20240310)
    for _ in range(500):
        start = at(2020, 1, 1) + timedelta(microseconds=rng.randrange(10**15))
        end = start + timedelta(microseconds=rng.randrange(1, 32 * 86_400 * 10**6))
        moment = start + timedelta(microseconds=rng.randrange(micros(end - start)))
        unit, quantity = rng.choice([1, 999, 1000, 1001, 123_457]), rng.randrange(1, 10_001)

        amount = prorate(unit, quantity, start, end, moment)

        exact = Fraction(unit * quantity * micros(end - moment), micros(end - start))
        assert type(amount) is int
        assert amount == int(exact + Fraction(1, 2)), (start, end, moment, unit, quantity)


@pytest.mark.parametrize("naive", ["start", "end", "at"])
def test_prorate_rejects_naive_datetimes(naive: str) -> None:
    moments = {"start": START, "end": END, "at": START + timedelta(days=1)}
    moments[naive] = moments[naive].replace(tzinfo=None)

    with pytest.raises((ValueError, TypeError)):
        prorate(1000, 1, moments["start"], moments["end"], moments["at"])


# -- the period remembered per anchor ------------------------------------------------

_instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@given(anchors=st.lists(_instants, min_size=1, max_size=3), asked=st.lists(st.tuples(st.integers(0, 2), _instants), max_size=40))
def test_the_period_remembered_for_an_anchor_is_the_one_the_calendar_gives_for_every_instant_asked(anchors, asked) -> None:
    for choice, moment in asked:
        anchor = anchors[choice % len(anchors)]
        if moment < anchor:
            continue
        start, end = billing_period(anchor, moment)
        assert start <= moment < end
        assert (start, end) == _walked_period(anchor, moment)


# Zones at offset 0 on some dates: `_require_utc` takes an instant in any of them when its offset is 0 there.
# Aware datetimes are equal (and hash alike) by instant, whatever their zone, but the periods of a
# Europe/London anchor are counted on London's calendar: a winter anchor's summer periods start at 23:00Z.
_OFFSET_ZERO_ZONES = [UTC, timezone(timedelta(0)), ZoneInfo("UTC"), ZoneInfo("Europe/London"), ZoneInfo("Africa/Casablanca")]
_wall_clocks = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31))


@given(
    wall_clocks=st.lists(_wall_clocks, min_size=1, max_size=3),
    moments=st.lists(_instants, min_size=1, max_size=3),
    asked=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(_OFFSET_ZERO_ZONES), st.integers(0, 2)), max_size=40),
)
def test_an_anchors_period_never_comes_from_an_equal_instant_in_another_zone(wall_clocks, moments, asked) -> None:
    """Few wall clocks and moments, asked in every zone: the same instant comes back in another zone often."""
    for anchor_choice, zone, moment_choice in asked:
        anchor = wall_clocks[anchor_choice % len(wall_clocks)].replace(tzinfo=zone)
        moment = moments[moment_choice % len(moments)]
        if moment < anchor or anchor.utcoffset() != timedelta(0):
            continue
        period = billing_period(anchor, moment)
        assert [(edge, edge.tzinfo) for edge in period] == [(edge, edge.tzinfo) for edge in _walked_period(anchor, moment)]


def test_a_utc_anchors_period_does_not_depend_on_an_earlier_call_with_the_same_instant_in_london() -> None:
    """2024-01-31 00:00 in London is 00:00Z (offset 0 in January); its July period starts at
    2024-06-30 00:00+01:00, an hour before the UTC anchor's. Remembered by instant alone, the UTC
    caller got London's period back, and `prorate` refused it."""
    moment, anchor_in_utc = at(2024, 7, 5), at(2024, 1, 31)
    with contextlib.suppress(ValueError):  # taken or refused: either way it must not reach the UTC anchor
        billing_period(datetime(2024, 1, 31, tzinfo=ZoneInfo("Europe/London")), moment)
    start, end = billing_period(anchor_in_utc, moment)
    assert (start, end) == (at(2024, 6, 30), at(2024, 7, 31))
    assert start.utcoffset() == end.utcoffset() == timedelta(0)
    assert prorate(1000, 1, start, end, moment) == 839  # 26 of 31 days: 838.7 -> 839


def _walked_period(anchor: datetime, moment: datetime) -> tuple[datetime, datetime]:
    """Period k starts at anchor + k months: the first k whose next start lies past the moment."""
    k = 0
    while add_months(anchor, k + 1) <= moment:
        k += 1
    return add_months(anchor, k), add_months(anchor, k + 1)


# -- period starts, counted from the period holding `after` --------------------------------


def _walked_starts(anchor: datetime, after: datetime, until: datetime) -> list[datetime]:
    """Every start anchor + k months (k >= 1), walked from the anchor, that lies in (after, until]."""
    starts, k = [], 1
    while (start := add_months(anchor, k)) <= until:
        if start > after:
            starts.append(start)
        k += 1
    return starts


@given(anchor=_instants, after=_instants, until=_instants)
def test_period_starts_are_the_starts_the_walk_from_the_anchor_finds(anchor, after, until) -> None:
    assert period_starts(anchor, after, until) == _walked_starts(anchor, after, until)


@given(anchor=_instants, months=st.integers(-3, 130), nudge=st.sampled_from([-1, 0, 1]), span=st.integers(0, 40))
def test_period_starts_at_and_beside_a_start_are_the_walks(anchor, months, nudge, span) -> None:
    """`after` exactly on a start, a microsecond either side, or before the anchor (anchors on the
    29th to 31st clamp in short months, where an off-by-one would show)."""
    after = add_months(anchor, months) if months >= 0 else anchor - timedelta(days=-months)
    after += timedelta(microseconds=nudge)
    until = after + timedelta(days=span * 31)
    assert period_starts(anchor, after, until) == _walked_starts(anchor, after, until)


def test_period_starts_from_a_31st_anchor_through_february() -> None:
    anchor = datetime(2025, 1, 31, 10, tzinfo=UTC)
    assert period_starts(anchor, datetime(2025, 2, 28, 10, tzinfo=UTC), datetime(2025, 5, 31, 10, tzinfo=UTC)) == [
        datetime(2025, 3, 31, 10, tzinfo=UTC),
        datetime(2025, 4, 30, 10, tzinfo=UTC),
        datetime(2025, 5, 31, 10, tzinfo=UTC),
    ]


def test_period_starts_after_an_instant_read_in_a_zone_ahead_of_the_anchor_s_miss_no_start() -> None:
    """`after` in UTC+2 names February while, in the anchor's UTC, it is still 31 January: the start of
    31 January 23:00 must still be found."""
    anchor = datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    after = datetime(2025, 2, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))  # 2025-01-31 22:30 UTC
    until = datetime(2025, 3, 31, 0, 0, tzinfo=UTC)
    assert (
        period_starts(anchor, after, until)
        == _walked_starts(anchor, after, until)
        == [
            datetime(2025, 1, 31, 23, 0, tzinfo=UTC),
            datetime(2025, 2, 28, 23, 0, tzinfo=UTC),
        ]
    )


# An aware datetime at another offset is refused, not only a naive one (`_require_utc` takes `datetime.UTC` at once).
PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize("which", ["anchor", "at"])
def test_billing_period_refuses_an_aware_datetime_at_another_offset(which):
    anchor, at = datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC)
    if which == "anchor":
        anchor = anchor.astimezone(PLUS_TWO)
    else:
        at = at.astimezone(PLUS_TWO)
    with pytest.raises(ValueError, match="UTC"):
        billing_period(anchor, at)


def test_prorate_refuses_an_aware_datetime_at_another_offset():
    start, end = datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)
    with pytest.raises(ValueError, match="UTC"):
        prorate(1000, 1, start, end, datetime(2024, 2, 10, tzinfo=UTC).astimezone(PLUS_TWO))
