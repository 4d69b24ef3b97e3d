"""Membership's own settings, from environment variables (the shared ones come from `shared.settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from shared.settings import integer_setting, positive_number_setting

MAX_WORKER_THREADS = 256
MAX_RELAY_BATCH = 10_000  # events in flight before the relay awaits their acks


@dataclass(frozen=True)
class MembershipSettings:
    # How long a command's record (its fingerprint and first reply) is kept: a repeat of its
    # command_id within the window gets the first reply; after it, the command is decided afresh.
    command_retention_hours: float = 24.0
    command_cleanup_seconds: float = 600.0  # how often records past the window are dropped
    worker_threads: int = 8  # decisions and saves run in threads (the event store is synchronous)
    relay_batch_size: int = 256  # events the relay publishes before it awaits their acks
    # How often the access bucket's writer says it is caught up (gateways' authorizers fail closed
    # when the last such heartbeat is older than their bound).
    access_heartbeat_seconds: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> MembershipSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        return cls(
            command_retention_hours=positive_number_setting(env, "COMMAND_RETENTION_HOURS", d.command_retention_hours),
            command_cleanup_seconds=positive_number_setting(env, "COMMAND_CLEANUP_SECONDS", d.command_cleanup_seconds),
            worker_threads=integer_setting(env, "WORKER_THREADS", d.worker_threads, 1, MAX_WORKER_THREADS),
            relay_batch_size=integer_setting(env, "RELAY_BATCH_SIZE", d.relay_batch_size, 1, MAX_RELAY_BATCH),
            access_heartbeat_seconds=positive_number_setting(env, "ACCESS_HEARTBEAT_SECONDS", d.access_heartbeat_seconds),
        )

    @property
    def command_retention(self) -> timedelta:
        return timedelta(hours=self.command_retention_hours)
