"""The ledger's rules, pure: which charges each seat fact causes, and when renewals fall due.

Every amount comes from the events (or, for a renewal, from the seat count the events left at the
period's start) and the contract's calendar rule, never from the wall clock, so that a rebuild from
the stream writes the same rows as the live projection.

The renewal rule: the renewal of the period starting at S bills `seats_purchased` after exactly the
events with `occurred_at < S`, in event order. An event applies the renewals due by its instant
before it takes effect. Time (the scheduler) may renew before the next event comes; should an
event from before an already renewed start still arrive, the renewals after its instant are
withdrawn and charged again from the state it leaves (`Entry.withdraws_renewals_after`), which is
what a replay of the stream would have written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared import pricing
from shared.contract import events as ev
from shared.contract.events import Envelope


@dataclass
class Account:
    """An organization's seat position, as billing knows it."""

    org_id: str
    plan: str
    billing_anchor: datetime
    unit_price_cents: int
    seats_purchased: int = 0
    renewed_through: datetime = field(default=None)  # type: ignore[assignment]
    last_seat_event_id: str | None = None

    def __post_init__(self) -> None:
        if self.renewed_through is None:
            self.renewed_through = self.billing_anchor

    @property
    def next_period_start(self) -> datetime:
        return pricing.billing_period(self.billing_anchor, self.renewed_through)[1]


@dataclass(frozen=True)
class Charge:
    charge_id: str
    org_id: str
    kind: str  # seat_proration | seat_credit | seat_renewal
    quantity: int
    unit_price_cents: int
    amount_cents: int
    billing_period_start: datetime
    billing_period_end: datetime
    occurred_at: datetime
    event_id: str | None


@dataclass(frozen=True)
class Mismatch:
    event_id: str
    org_id: str
    recorded_cents: int
    expected_cents: int
    reason: str


@dataclass
class Entry:
    """What one event or one renewal run did to an account."""

    account: Account | None
    charges: list[Charge] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    # Renewal charges of periods starting after this instant are void (they are in `charges` again if due).
    withdraws_renewals_after: datetime | None = None


def charge_renewals_until(account: Account, until: datetime) -> list[Charge]:
    """The renewal charge of every period that started after the last renewal and by `until`."""
    if until < account.next_period_start:  # most events fall within their period: no need to walk the calendar
        return []
    charges = []
    for start in pricing.period_starts(account.billing_anchor, account.renewed_through, until):
        if account.seats_purchased and account.plan != "free":
            end = pricing.billing_period(account.billing_anchor, start)[1]
            charges.append(
                Charge(
                    charge_id=f"renewal:{account.org_id}:{start.isoformat()}",
                    org_id=account.org_id,
                    kind="seat_renewal",
                    quantity=account.seats_purchased,
                    unit_price_cents=account.unit_price_cents,
                    amount_cents=account.seats_purchased * account.unit_price_cents,
                    billing_period_start=start,
                    billing_period_end=end,
                    occurred_at=start,
                    event_id=account.last_seat_event_id,
                )
            )
        account.renewed_through = start
    return charges


def record(account: Account | None, event: Envelope) -> Entry:
    """Time moves to the event's instant (renewals first), then the event takes effect."""
    data = event.typed_data() if event.event_type in ev.EVENT_DATA else None
    if isinstance(data, ev.OrganizationCreated):
        return Entry(Account(event.org_id, data.plan, data.billing_anchor, data.unit_price_cents))
    if account is None:
        return Entry(None)  # an event before its organization: nothing to bill
    entry = Entry(account)
    renewed_through = account.renewed_through
    if event.occurred_at < renewed_through:  # time renewed past this event before it arrived
        entry.withdraws_renewals_after = event.occurred_at
        account.renewed_through = _last_period_start(account, event.occurred_at)
    entry.charges += charge_renewals_until(account, event.occurred_at)
    if isinstance(data, ev.PlanChanged):
        account.plan = data.to_plan
        if data.billing_anchor != account.billing_anchor:
            account.billing_anchor = account.renewed_through = data.billing_anchor
    elif isinstance(data, ev.SeatAdded):
        entry.charges.append(_seat_charge(account, event, data.quantity, data.charge_cents, "seat_proration", data))
        entry.mismatches += _check(account, event, data.quantity, data.charge_cents, data)
        account.seats_purchased += data.quantity
        account.last_seat_event_id = event.event_id
    elif isinstance(data, ev.SeatRemoved):
        entry.charges.append(_seat_charge(account, event, data.quantity, -data.credit_cents, "seat_credit", data))
        entry.mismatches += _check(account, event, data.quantity, data.credit_cents, data)
        account.seats_purchased -= data.quantity
        account.last_seat_event_id = event.event_id
    if entry.withdraws_renewals_after is not None:
        entry.charges += charge_renewals_until(account, renewed_through)
    return entry


def _last_period_start(account: Account, at: datetime) -> datetime:
    """The start of the period holding `at`, or the anchor for an instant before it."""
    if at < account.billing_anchor:
        return account.billing_anchor
    return pricing.billing_period(account.billing_anchor, at)[0]


def _seat_charge(
    account: Account, event: Envelope, quantity: int, amount: int, kind: str, data: ev.SeatAdded | ev.SeatRemoved
) -> Charge:
    return Charge(
        charge_id=f"{event.event_id}:{kind}",
        org_id=account.org_id,
        kind=kind,
        quantity=quantity,
        unit_price_cents=data.unit_price_cents,
        amount_cents=amount,
        billing_period_start=data.billing_period_start,
        billing_period_end=data.billing_period_end,
        occurred_at=event.occurred_at,
        event_id=event.event_id,
    )


def _check(
    account: Account, event: Envelope, quantity: int, recorded: int, data: ev.SeatAdded | ev.SeatRemoved
) -> list[Mismatch]:
    """Billing recomputes what membership charged, and says so when they differ."""
    start, end = pricing.billing_period(account.billing_anchor, event.occurred_at)
    expected = pricing.prorate(account.unit_price_cents, quantity, start, end, event.occurred_at)
    if (start, end) != (data.billing_period_start, data.billing_period_end):
        reason = "billing period differs from the calendar rule"
    elif expected != recorded:
        reason = "amount differs from the proration rule"
    else:
        return []
    return [Mismatch(event.event_id, account.org_id, recorded, expected, reason)]
