"""The next bill's rule: this period's seat changes plus the next period's renewal at today's seats.

Dates are written out by hand from the contract's calendar rule (anchor + k months, clamped).
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.billing.invoices import upcoming_invoice
from services.billing.ledger import Charge, record
from tests.unit.test_billing_ledger import ORG, charge_renewals_until, created, open_account, seat_added, seat_removed


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def charges_of(account, *events) -> list[Charge]:
    charges = []
    for event in events:
        charges += record(account, event).charges
    return charges


def test_the_next_bill_is_this_periods_changes_plus_the_next_periods_renewal_at_todays_seats():
    account = open_account(at(2024, 1, 31))
    added = seat_added(at(2024, 2, 10), 3, 1966, at(2024, 1, 31), at(2024, 2, 29))
    removed = seat_removed(at(2024, 2, 12), 1, 586, at(2024, 1, 31), at(2024, 2, 29))
    charges = charges_of(account, added, removed)

    invoice = upcoming_invoice(account, charges, at(2024, 2, 15))

    assert (invoice.billing_period_start, invoice.billing_period_end) == (at(2024, 2, 29), at(2024, 3, 31))
    assert invoice.issued_at == at(2024, 2, 29)
    assert [(line.kind, line.quantity, line.amount_cents) for line in invoice.lines] == [
        ("seat_proration", 3, 1966),
        ("seat_credit", 1, -586),
        ("seat_renewal", 2, 2000),
    ]
    renewal = invoice.lines[-1]
    assert (renewal.billing_period_start, renewal.billing_period_end) == (at(2024, 2, 29), at(2024, 3, 31))
    assert (invoice.lines[0].billing_period_start, invoice.lines[0].billing_period_end) == (at(2024, 1, 31), at(2024, 2, 29))
    assert renewal.charge_id == f"renewal:{ORG}:2024-02-29T10:00:00+00:00"  # the id it will carry once charged
    assert invoice.total_cents == 1966 - 586 + 2000
    assert isinstance(invoice.total_cents, int)


def test_across_a_month_end_the_current_periods_own_renewal_is_not_on_the_next_bill():
    account = open_account(at(2024, 1, 31))
    charges = charges_of(account, seat_added(at(2024, 2, 10), 2, 1310, at(2024, 1, 31), at(2024, 2, 29)))
    charges += charge_renewals_until(account, at(2024, 3, 1))  # Feb 29's renewal, billed at its start
    march = seat_added(at(2024, 3, 5), 1, 839, at(2024, 2, 29), at(2024, 3, 31))
    charges += charges_of(account, march)

    invoice = upcoming_invoice(account, charges, at(2024, 3, 30, 23, 59))

    assert (invoice.billing_period_start, invoice.billing_period_end, invoice.issued_at) == (
        at(2024, 3, 31),
        at(2024, 4, 30),
        at(2024, 3, 31),
    )
    assert [(line.kind, line.event_id, line.amount_cents) for line in invoice.lines] == [
        ("seat_proration", march.event_id, 839),
        ("seat_renewal", march.event_id, 3000),
    ]
    assert invoice.total_cents == 3839


def test_a_jan_31_anchor_bills_next_from_the_last_day_of_february_in_leap_and_common_years():
    for year, february_end in ((2024, 29), (2023, 28)):
        account = open_account(at(year, 1, 31))
        charges = charges_of(account, seat_added(at(year, 1, 31, 12), 1, 997, at(year, 1, 31), at(year, 2, february_end)))
        invoice = upcoming_invoice(account, charges, at(year, 2, 1))
        assert invoice.issued_at == at(year, 2, february_end)
        assert (invoice.billing_period_start, invoice.billing_period_end) == (at(year, 2, february_end), at(year, 3, 31))
        # From the period starting on the last day of February, the next bill is issued on Mar 31, not Mar 28/29.
        later = upcoming_invoice(account, charges, at(year, 3, 1))
        assert (later.issued_at, later.billing_period_end) == (at(year, 3, 31), at(year, 4, 30))


def test_the_period_boundary_belongs_to_the_period_it_starts():
    account = open_account(at(2024, 1, 31))
    invoice = upcoming_invoice(account, [], at(2024, 2, 29))
    assert invoice.issued_at == at(2024, 3, 31)


def test_no_renewal_line_without_purchased_seats_or_on_the_free_plan():
    account = open_account(at(2024, 1, 31))
    added = seat_added(at(2024, 2, 10), 1, 655, at(2024, 1, 31), at(2024, 2, 29))
    removed = seat_removed(at(2024, 2, 11), 1, 621, at(2024, 1, 31), at(2024, 2, 29))
    invoice = upcoming_invoice(account, charges_of(account, added, removed), at(2024, 2, 15))
    assert [line.kind for line in invoice.lines] == ["seat_proration", "seat_credit"]
    assert invoice.total_cents == 655 - 621

    free = record(None, created(at(2024, 1, 31), plan="free")).account
    free.seats_purchased = 2  # even with seats on the books, the free plan renews nothing
    assert upcoming_invoice(free, [], at(2024, 2, 15)).lines == []
    assert upcoming_invoice(free, [], at(2024, 2, 15)).total_cents == 0
