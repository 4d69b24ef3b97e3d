"""Waiting for something another process does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.1) -> T:
    """The probe's first truthy answer, or its last answer once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = await probe()
        if outcome or time.monotonic() > deadline:
            return outcome
        await asyncio.sleep(interval)
