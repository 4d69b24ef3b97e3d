"""A task run at a fixed interval until the service stops: the schedulers' one loop.

Billing's renewals, audit's retention purge and membership's dropping of old command records run
now, then every `interval` seconds; a run that fails is logged and the next one comes as usual. The interval is the service's setting, and
each run reads the time from the service's clock, so a test drives both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


async def every(interval: float, run: Callable[[], Awaitable[object]], stop: asyncio.Event, *, failed: str) -> None:
    """Awaits `run()` now and every `interval` seconds until `stop` is set (or the task is
    cancelled); a failure is logged with the message `failed` and does not end the loop."""
    while not stop.is_set():
        try:
            await run()
        except Exception:
            log.exception(failed)
        # Not `wait_for`: on 3.11 it swallows a cancel that lands as `stop` is set.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
