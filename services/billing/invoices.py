"""The next bill, pure: what will be issued at the end of the current period.

It holds this period's prorations and credits (already charged), and the renewal of the next
period at today's `seats_purchased` (not charged yet: it is the line the renewal will write if no
seat changes before then, with the `charge_id` it will carry). The renewal line is left out when
nothing would be charged: no purchased seats, or the free plan. This period's own renewal is not
on it: that was billed at this period's start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared import pricing

from .ledger import Account, Charge, charge_renewals_until


@dataclass(frozen=True)
class UpcomingInvoice:
    billing_period_start: datetime  # the next period's, the one the renewal pays for
    billing_period_end: datetime
    issued_at: datetime  # the current period's end
    lines: list[Charge]
    total_cents: int


def current_period(account: Account, now: datetime) -> tuple[datetime, datetime]:
    return pricing.billing_period(account.billing_anchor, now)


def upcoming_invoice(account: Account, this_periods_charges: list[Charge], now: datetime) -> UpcomingInvoice:
    """`this_periods_charges`: the account's charges whose billing period is the one holding `now`."""
    start, end = current_period(account, now)
    changes = [c for c in this_periods_charges if c.kind != "seat_renewal" and c.billing_period_start == start]
    next_renewal = charge_renewals_until(replace(account, renewed_through=start), end)
    lines = [*changes, *next_renewal]
    next_start, next_end = pricing.billing_period(account.billing_anchor, end)
    return UpcomingInvoice(next_start, next_end, end, lines, sum(line.amount_cents for line in lines))
