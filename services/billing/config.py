"""Billing's own settings, from environment variables (the shared ones come from `shared.settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class BillingSettings:
    # A period is renewed by time only this long after it started, so that a seat change decided
    # just before the start has had time to reach the stream (see renewals.py).
    renewal_grace_seconds: float = 300.0
    renewal_interval_seconds: float = 30.0  # how often the renewal scheduler looks

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BillingSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        return cls(
            renewal_grace_seconds=float(env.get("RENEWAL_GRACE_SECONDS", d.renewal_grace_seconds)),
            renewal_interval_seconds=float(env.get("RENEWAL_INTERVAL_SECONDS", d.renewal_interval_seconds)),
        )

    @property
    def renewal_grace(self) -> timedelta:
        return timedelta(seconds=self.renewal_grace_seconds)
