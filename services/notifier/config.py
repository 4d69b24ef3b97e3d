"""The notifier's own settings, from environment variables (the shared ones come from `shared.settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.settings import ConfigurationError, integer_setting, positive_number_setting

from .deliveries import backoff

MAX_SEND_BATCH = 1000


@dataclass(frozen=True)
class NotifierSettings:
    mail_from: str = "Team Members <no-reply@team-members.localhost>"
    retry_base_seconds: float = 1.0  # first backoff after a temporary SMTP failure; doubles each attempt
    retry_max_seconds: float = 60.0  # backoff cap
    smtp_timeout_seconds: float = 30.0  # per SMTP operation
    # A delivery left in `sending` longer than this (its sender crashed) is tried again. Must exceed
    # the time one send can take, or a slow send could be taken over and doubled by another sender.
    sending_timeout_seconds: float = 120.0
    poll_seconds: float = 1.0  # the sender also wakes on a NOTIFY from the projection
    send_batch: int = 16  # deliveries claimed in one transaction, then sent one by one over one connection

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> NotifierSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        settings = cls(
            mail_from=env.get("MAIL_FROM", d.mail_from),
            retry_base_seconds=positive_number_setting(env, "SMTP_RETRY_BASE_SECONDS", d.retry_base_seconds),
            retry_max_seconds=positive_number_setting(env, "SMTP_RETRY_MAX_SECONDS", d.retry_max_seconds),
            smtp_timeout_seconds=positive_number_setting(env, "SMTP_TIMEOUT_SECONDS", d.smtp_timeout_seconds),
            sending_timeout_seconds=positive_number_setting(env, "NOTIFIER_SENDING_TIMEOUT_SECONDS", d.sending_timeout_seconds),
            poll_seconds=positive_number_setting(env, "NOTIFIER_POLL_SECONDS", d.poll_seconds),
            send_batch=integer_setting(env, "NOTIFIER_SEND_BATCH", d.send_batch, 1, MAX_SEND_BATCH),
        )
        if settings.sending_timeout_seconds <= settings.smtp_timeout_seconds:
            raise ConfigurationError("NOTIFIER_SENDING_TIMEOUT_SECONDS must exceed SMTP_TIMEOUT_SECONDS")
        return settings

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (the rule: `deliveries.backoff`)."""
        return backoff(attempts, self.retry_base_seconds, self.retry_max_seconds)
