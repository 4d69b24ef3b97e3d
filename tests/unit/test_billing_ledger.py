"""The billing ledger's pure rules: charges per seat fact, renewals per period, mismatch detection.

Every expected amount and date is written out by hand from the contract's rule
("Plans, seats, pricing"), never computed with the ledger's or the pricing module's helpers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from itertools import count

import msgspec

from services.billing.ledger import Account, Charge, record, renewals_until
from shared.contract.events import Envelope

ORG = "org1"
_ids = count(1)


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=timezone.utc)


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
        "OrganizationCreated", anchor, name="Acme", plan=plan, owner_user_id="u1", owner_email="o@acme.test",
        seats_included=1 if plan == "free" else 3, unit_price_cents=1000, billing_anchor=anchor,
    )


def seat_added(when: datetime, quantity: int, cents: int, start: datetime, end: datetime) -> Envelope:
    return envelope(
        "SeatAdded", when, quantity=quantity, seats_total=3 + quantity, unit_price_cents=1000,
        charge_cents=cents, billing_period_start=start, billing_period_end=end,
    )


def seat_removed(when: datetime, quantity: int, cents: int, start: datetime, end: datetime) -> Envelope:
    return envelope(
        "SeatRemoved", when, quantity=quantity, seats_total=3, unit_price_cents=1000,
        credit_cents=cents, billing_period_start=start, billing_period_end=end,
    )


def invited(when: datetime) -> Envelope:
    return envelope(
        "MemberInvited", when, invitation_id="inv1", email="x@acme.test", role="developer",
        invited_by={"type": "system", "id": "platform"}, expires_at="2099-01-01T00:00:00Z",
    )


def open_account(anchor: datetime, plan: str = "pro") -> Account:
    account = record(None, created(anchor, plan)).account
    assert account is not None
    return account


def renewal(start: datetime, end: datetime, seats: int, event_id: str | None) -> Charge:
    return Charge(
        charge_id=f"renewal:{ORG}:{start.strftime('%Y-%m-%dT%H:%M:%S')}+00:00", org_id=ORG, kind="seat_renewal",
        quantity=seats, unit_price_cents=1000, amount_cents=seats * 1000, billing_period_start=start,
        billing_period_end=end, occurred_at=start, event_id=event_id,
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
            charge_id=f"{event.event_id}:seat_proration", org_id=ORG, kind="seat_proration", quantity=2,
            unit_price_cents=1000, amount_cents=966, billing_period_start=JAN31, billing_period_end=FEB29,
            occurred_at=at(2024, 2, 15), event_id=event.event_id,
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
    assert renewals_until(account, at(2024, 4, 1)) == [renewal(MAR31, APR30, 2, add.event_id)]
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
    assert renewals_until(account, MAR31) == [renewal(MAR31, APR30, 3, second.event_id)]


def test_a_renewal_falls_due_exactly_at_its_period_start():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 1, 1000, JAN31, FEB29))
    assert renewals_until(account, at(2024, 2, 29, 9, 59)) == []
    assert [c.billing_period_start for c in renewals_until(account, FEB29)] == [FEB29]


def test_renewals_cross_a_year_end_and_clamp_to_the_last_day_of_short_months():
    dec31 = at(2023, 12, 31)
    account = open_account(dec31)
    add = seat_added(dec31, 1, 1000, dec31, at(2024, 1, 31))
    record(account, add)
    assert renewals_until(account, at(2024, 3, 1)) == [
        renewal(at(2024, 1, 31), FEB29, 1, add.event_id),
        renewal(FEB29, MAR31, 1, add.event_id),
    ]


def test_renewals_are_idempotent_over_time():
    account = open_account(JAN31)
    record(account, seat_added(JAN31, 2, 2000, JAN31, FEB29))
    first = renewals_until(account, at(2024, 4, 1))
    assert [c.billing_period_start for c in first] == [FEB29, MAR31]
    assert renewals_until(account, at(2024, 4, 1)) == []
    assert renewals_until(account, at(2024, 3, 15)) == []  # going back in time re-bills nothing


def test_no_renewal_charge_without_purchased_seats_and_the_period_is_not_billed_later():
    account = open_account(JAN31)
    assert renewals_until(account, at(2024, 3, 1)) == []
    assert account.renewed_through == FEB29
    record(account, seat_added(at(2024, 3, 1), 1, 968, FEB29, MAR31))  # 1000*30/31 = 967.74 -> 968
    assert [c.billing_period_start for c in renewals_until(account, at(2024, 4, 1))] == [MAR31]


def test_no_renewal_on_the_free_plan():
    account = Account(ORG, "free", JAN31, 1000, seats_purchased=2)
    assert renewals_until(account, at(2024, 6, 1)) == []
    assert account.renewed_through == at(2024, 5, 31)


def test_plan_change_from_free_to_pro_resets_the_renewal_schedule_to_the_new_anchor():
    account = open_account(at(2024, 1, 10), plan="free")
    new_anchor = at(2024, 3, 20, 15, 30)
    changed = envelope(
        "PlanChanged", new_anchor, from_plan="free", to_plan="pro", seats_included=3, billing_anchor=new_anchor,
    )
    assert record(account, changed).charges == []
    assert (account.plan, account.billing_anchor, account.renewed_through) == ("pro", new_anchor, new_anchor)
    add = seat_added(new_anchor, 1, 1000, new_anchor, at(2024, 4, 20, 15, 30))
    entry = record(account, add)
    assert entry.mismatches == []  # the seat's period follows the new anchor
    assert renewals_until(account, at(2024, 5, 15)) == [
        Charge(
            charge_id=f"renewal:{ORG}:2024-04-20T15:30:00+00:00", org_id=ORG, kind="seat_renewal", quantity=1,
            unit_price_cents=1000, amount_cents=1000, billing_period_start=at(2024, 4, 20, 15, 30),
            billing_period_end=at(2024, 5, 20, 15, 30), occurred_at=at(2024, 4, 20, 15, 30), event_id=add.event_id,
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
