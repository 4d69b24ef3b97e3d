"""The billing ledger's pure rules: charges per seat fact, renewals per period, mismatch detection.

Every expected amount and date is written out by hand from the contract's rule
("Plans, seats, pricing"), never computed with the ledger's or the pricing module's helpers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.billing.ledger import Account, Charge, Entry, charge_renewals_until, record
from shared.contract.events import Envelope

ORG = "org1"
_ids = count(1)


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def envelope(event_type: str, occurred_at: datetime, org_id: str = ORG, **data) -> Envelope:
    n = next(_ids)
    return msgspec.convert(
        {
            "event_id": f"evt-{n}",
            "event_type": event_type,
            "schema_version": 1,
            "org_id": org_id,
            "sequence": n,
            "occurred_at": occurred_at,
            "actor": {"type": "system", "id": "platform"},
            "command_id": f"cmd-{n}",
            "correlation_id": None,
            "data": data,
        },
        Envelope,
    )


def created(anchor: datetime, plan: str = "pro") -> Envelope:
    return envelope(
        "OrganizationCreated",
        anchor,
        name="Acme",
        plan=plan,
        owner_user_id="u1",
        owner_email="o@acme.test",
        seats_included=1 if plan == "free" else 3,
        unit_price_cents=1000,
        billing_anchor=anchor,
    )


def seat_added(when: datetime, quantity: int, cents: int, start: datetime, end: datetime) -> Envelope:
    return envelope(
        "SeatAdded",
        when,
        quantity=quantity,
        seats_total=3 + quantity,
        unit_price_cents=1000,
        charge_cents=cents,
        billing_period_start=start,
        billing_period_end=end,
    )


def seat_removed(when: datetime, quantity: int, cents: int, start: datetime, end: datetime) -> Envelope:
    return envelope(
        "SeatRemoved",
        when,
        quantity=quantity,
        seats_total=3,
        unit_price_cents=1000,
        credit_cents=cents,
        billing_period_start=start,
        billing_period_end=end,
    )


def invited(when: datetime) -> Envelope:
    return envelope(
        "MemberInvited",
        when,
        invitation_id="inv1",
        email="x@acme.test",
        role="developer",
        invited_by={"type": "system", "id": "platform"},
        expires_at="2099-01-01T00:00:00Z",
    )


def open_account(anchor: datetime, plan: str = "pro") -> Account:
    account = record(None, created(anchor, plan)).account
    assert account is not None
    return account


def renewal(start: datetime, end: datetime, seats: int, event_id: str | None) -> Charge:
    return Charge(
        charge_id=f"renewal:{ORG}:{start.strftime('%Y-%m-%dT%H:%M:%S')}+00:00",
        org_id=ORG,
        kind="seat_renewal",
        quantity=seats,
        unit_price_cents=1000,
        amount_cents=seats * 1000,
        billing_period_start=start,
        billing_period_end=end,
        occurred_at=start,
        event_id=event_id,
    )


JAN31 = at(2024, 1, 31)
FEB29 = at(2024, 2, 29)  # leap day: Jan 31 + 1 month clamps to Feb's last day
MAR31 = at(2024, 3, 31)  # period 2 is anchor + 2 months, not Feb 29 + 1 month
APR30 = at(2024, 4, 30)


def test_organization_created_opens_an_account_at_its_anchor_with_no_charges():
    entry = record(None, created(JAN31))
    assert entry.charges == [] and entry.mismatches == []
    account = entry.account
    assert (account.org_id, account.plan, account.unit_price_cents) == (ORG, "pro", 1000)
    assert account.billing_anchor == JAN31 and account.renewed_through == JAN31
    assert account.seats_purchased == 0


def test_seat_added_records_one_proration_charge_of_the_events_amount_and_grows_seats():
    account = open_account(JAN31)
    # [Jan 31 10:00, Feb 29 10:00) is 29 days; 14 days remain on Feb 15: 2*1000*14/29 = 965.52 -> 966
    event = seat_added(at(2024, 2, 15), 2, 966, JAN31, FEB29)
    entry = record(account, event)
    assert entry.charges == [
        Charge(
            charge_id=f"{event.event_id}:seat_proration",
            org_id=ORG,
            kind="seat_proration",
            quantity=2,
            unit_price_cents=1000,
            amount_cents=966,
            billing_period_start=JAN31,
            billing_period_end=FEB29,
            occurred_at=at(2024, 2, 15),
            event_id=event.event_id,
        )
    ]
    assert entry.mismatches == []
    assert account.seats_purchased == 2


def test_seat_removed_records_a_negative_credit_and_shrinks_seats():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 3, 3000, JAN31, FEB29))
    # 1*1000*14/29 = 482.76 -> 483, recorded as a credit
    event = seat_removed(at(2024, 2, 15), 1, 483, JAN31, FEB29)
    entry = record(account, event)
    [charge] = entry.charges
    assert (charge.kind, charge.charge_id, charge.event_id) == ("seat_credit", f"{event.event_id}:seat_credit", event.event_id)
    assert (charge.quantity, charge.amount_cents) == (1, -483)
    assert (charge.billing_period_start, charge.billing_period_end) == (JAN31, FEB29)
    assert entry.mismatches == []
    assert account.seats_purchased == 2


def test_an_event_renews_only_periods_that_started_by_its_instant_then_renewals_until_adds_the_rest():
    account = open_account(JAN31)
    add = seat_added(at(2024, 1, 31, 12), 2, 1994, JAN31, FEB29)  # 2*1000*694h/696h = 1994.25 -> 1994
    record(account, add)
    entry = record(account, invited(at(2024, 3, 5)))
    assert entry.charges == [renewal(FEB29, MAR31, 2, add.event_id)]
    assert charge_renewals_until(account, at(2024, 4, 1)) == [renewal(MAR31, APR30, 2, add.event_id)]
    assert account.renewed_through == MAR31


def test_a_renewal_bills_the_seats_held_at_its_start_and_names_the_last_seat_event():
    account = open_account(JAN31)
    first = seat_added(JAN31, 2, 2000, JAN31, FEB29)
    record(account, first)
    # on Mar 5, within [Feb 29, Mar 31) (31 days), 26 days remain: 1000*26/31 = 838.71 -> 839
    second = seat_added(at(2024, 3, 5), 1, 839, FEB29, MAR31)
    entry = record(account, second)
    assert entry.charges[0] == renewal(FEB29, MAR31, 2, first.event_id)  # renewal first, before the event
    assert [c.kind for c in entry.charges] == ["seat_renewal", "seat_proration"]
    assert entry.mismatches == []
    assert charge_renewals_until(account, MAR31) == [renewal(MAR31, APR30, 3, second.event_id)]


def test_a_renewal_falls_due_exactly_at_its_period_start():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 1, 1000, JAN31, FEB29))
    assert charge_renewals_until(account, at(2024, 2, 29, 9, 59)) == []
    assert [c.billing_period_start for c in charge_renewals_until(account, FEB29)] == [FEB29]


def test_renewals_cross_a_year_end_and_clamp_to_the_last_day_of_short_months():
    dec31 = at(2023, 12, 31)
    account = open_account(dec31)
    add = seat_added(dec31, 1, 1000, dec31, at(2024, 1, 31))
    record(account, add)
    assert charge_renewals_until(account, at(2024, 3, 1)) == [
        renewal(at(2024, 1, 31), FEB29, 1, add.event_id),
        renewal(FEB29, MAR31, 1, add.event_id),
    ]


def test_renewals_are_idempotent_over_time():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 2, 2000, JAN31, FEB29))
    first = charge_renewals_until(account, at(2024, 4, 1))
    assert [c.billing_period_start for c in first] == [FEB29, MAR31]
    assert charge_renewals_until(account, at(2024, 4, 1)) == []
    assert charge_renewals_until(account, at(2024, 3, 15)) == []  # going back in time re-bills nothing


def test_no_renewal_charge_without_purchased_seats_and_the_period_is_not_billed_later():
    account = open_account(JAN31)
    assert charge_renewals_until(account, at(2024, 3, 1)) == []
    assert account.renewed_through == FEB29
    record(account, seat_added(at(2024, 3, 1), 1, 968, FEB29, MAR31))  # 1000*30/31 = 967.74 -> 968
    assert [c.billing_period_start for c in charge_renewals_until(account, at(2024, 4, 1))] == [MAR31]


def test_no_renewal_on_the_free_plan():
    account = Account(ORG, "free", JAN31, 1000, seats_purchased=2)
    assert charge_renewals_until(account, at(2024, 6, 1)) == []
    assert account.renewed_through == at(2024, 5, 31)


def test_plan_change_from_free_to_pro_resets_the_renewal_schedule_to_the_new_anchor():
    account = open_account(at(2024, 1, 10), plan="free")
    new_anchor = at(2024, 3, 20, 15, 30)
    changed = envelope(
        "PlanChanged",
        new_anchor,
        from_plan="free",
        to_plan="pro",
        seats_included=3,
        billing_anchor=new_anchor,
    )
    assert record(account, changed).charges == []
    assert (account.plan, account.billing_anchor, account.renewed_through) == ("pro", new_anchor, new_anchor)
    add = seat_added(new_anchor, 1, 1000, new_anchor, at(2024, 4, 20, 15, 30))
    entry = record(account, add)
    assert entry.mismatches == []  # the seat's period follows the new anchor
    assert charge_renewals_until(account, at(2024, 5, 15)) == [
        Charge(
            charge_id=f"renewal:{ORG}:2024-04-20T15:30:00+00:00",
            org_id=ORG,
            kind="seat_renewal",
            quantity=1,
            unit_price_cents=1000,
            amount_cents=1000,
            billing_period_start=at(2024, 4, 20, 15, 30),
            billing_period_end=at(2024, 5, 20, 15, 30),
            occurred_at=at(2024, 4, 20, 15, 30),
            event_id=add.event_id,
        )
    ]


def test_a_seat_charge_that_differs_from_the_proration_rule_is_a_mismatch_but_is_recorded_as_charged():
    account = open_account(JAN31)
    event = seat_added(at(2024, 2, 15), 2, 965, JAN31, FEB29)  # the rule gives 966
    entry = record(account, event)
    [mismatch] = entry.mismatches
    assert (mismatch.event_id, mismatch.org_id) == (event.event_id, ORG)
    assert (mismatch.recorded_cents, mismatch.expected_cents) == (965, 966)
    assert "amount" in mismatch.reason
    assert [c.amount_cents for c in entry.charges] == [965]
    assert account.seats_purchased == 2


def test_a_seat_credit_that_differs_from_the_proration_rule_is_a_mismatch():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 1, 1000, JAN31, FEB29))
    entry = record(account, seat_removed(at(2024, 2, 15), 1, 500, JAN31, FEB29))  # the rule gives 483
    [mismatch] = entry.mismatches
    assert (mismatch.recorded_cents, mismatch.expected_cents) == (500, 483)
    assert [c.amount_cents for c in entry.charges] == [-500]


def test_a_seat_charge_whose_period_differs_from_the_calendar_rule_is_a_mismatch():
    account = open_account(JAN31)
    # plain calendar months instead of months from the anchor
    entry = record(account, seat_added(at(2024, 2, 15), 2, 966, at(2024, 2, 1), at(2024, 3, 1)))
    [mismatch] = entry.mismatches
    assert "period" in mismatch.reason
    [charge] = entry.charges
    assert (charge.billing_period_start, charge.billing_period_end) == (at(2024, 2, 1), at(2024, 3, 1))


def test_an_event_before_its_organization_bills_nothing():
    entry = record(None, seat_added(JAN31, 2, 2000, JAN31, FEB29))
    assert entry.account is None and entry.charges == [] and entry.mismatches == []
    assert record(None, invited(at(2024, 3, 5))).charges == []


def post(book: dict[str, Charge], entry) -> None:
    """What the projection writes for an entry: withdrawn renewals deleted, then its charges inserted."""
    if entry.withdraws_renewals_after is not None:
        for charge_id, charge in list(book.items()):
            if charge.kind == "seat_renewal" and charge.billing_period_start > entry.withdraws_renewals_after:
                del book[charge_id]
    for charge in entry.charges:
        assert charge.charge_id not in book
        book[charge.charge_id] = charge


def test_a_seat_change_from_before_renewed_starts_reprices_those_renewals_from_the_seats_it_leaves():
    account = open_account(JAN31)
    first = seat_added(at(2024, 2, 10), 2, 0, JAN31, FEB29)
    book: dict[str, Charge] = {}
    post(book, record(account, first))
    post(book, Entry(account, charge_renewals_until(account, at(2024, 4, 1))))  # the scheduler, before the late event came
    late = seat_added(at(2024, 2, 29, 9, 59), 3, 0, JAN31, FEB29)  # decided a minute before Feb 29's start
    entry = record(account, late)
    assert entry.withdraws_renewals_after == at(2024, 2, 29, 9, 59)
    assert [c.kind for c in entry.charges] == ["seat_proration", "seat_renewal", "seat_renewal"]
    post(book, entry)
    assert sorted((c for c in book.values() if c.kind == "seat_renewal"), key=lambda c: c.billing_period_start) == [
        renewal(FEB29, MAR31, 5, late.event_id),
        renewal(MAR31, APR30, 5, late.event_id),
    ]
    assert account.renewed_through == MAR31 and account.seats_purchased == 5


def test_an_event_at_or_after_every_renewed_start_withdraws_nothing():
    account = open_account(JAN31)
    record(account, seat_added(at(2024, 2, 10), 2, 0, JAN31, FEB29))
    charge_renewals_until(account, FEB29)
    assert record(account, invited(FEB29)).withdraws_renewals_after is None


seat_changes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=100 * 24 * 60), st.integers(min_value=-3, max_value=4)),
    min_size=1,
    max_size=12,
)


@given(changes=seat_changes, ticks=st.lists(st.integers(min_value=0, max_value=110 * 24 * 60), max_size=12), data=st.data())
@settings(max_examples=200, deadline=None)
def test_wherever_the_scheduler_runs_between_events_the_ledger_equals_a_replay_without_it(changes, ticks, data):
    """A ledger fed the same events, with renewals by time at any moment (even past events yet to come), equals a replay."""
    events, seats = [], 0
    for minute, delta in sorted(changes):
        when = JAN31 + timedelta(minutes=minute + 1)
        start, end = (JAN31, FEB29)  # the seat events' own period does not enter renewals
        if delta > 0:
            events.append(seat_added(when, delta, 0, start, end))
            seats += delta
        elif delta < 0 and seats >= -delta:
            events.append(seat_removed(when, -delta, 0, start, end))
            seats += delta

    live_account, live_book = open_account(JAN31), {}
    tick_times = [JAN31 + timedelta(minutes=m) for m in ticks]
    for event in events:
        for tick in data.draw(st.lists(st.sampled_from(tick_times), max_size=2)) if tick_times else []:
            post(live_book, Entry(live_account, charge_renewals_until(live_account, tick)))
        post(live_book, record(live_account, event))
    final = max([JAN31, *tick_times, *(e.occurred_at for e in events)])
    post(live_book, Entry(live_account, charge_renewals_until(live_account, final)))

    replayed_account, replayed_book = open_account(JAN31), {}
    for event in events:
        post(replayed_book, record(replayed_account, event))
    post(replayed_book, Entry(replayed_account, charge_renewals_until(replayed_account, final)))

    assert live_book == replayed_book
    assert live_account == replayed_account
