"""The schedulers' loop: runs at once, then every interval; a failed run does not end it; a stop does."""

from __future__ import annotations

import asyncio

from shared.periodic import every


async def test_runs_again_after_a_failure_and_ends_when_stopped():
    stop = asyncio.Event()
    runs: list[int] = []

    async def run() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the database is restarting")
        if len(runs) == 3:
            stop.set()

    await asyncio.wait_for(every(0.01, run, stop, failed="run failed"), timeout=5)
    assert runs == [0, 1, 2]


async def test_a_stop_ends_the_wait_between_runs_at_once():
    stop = asyncio.Event()
    runs: list[None] = []

    async def run() -> None:
        runs.append(None)

    loop = asyncio.create_task(every(3600, run, stop, failed="run failed"))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, timeout=1)
    assert len(runs) == 1
