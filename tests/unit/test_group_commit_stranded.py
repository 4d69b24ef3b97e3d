"""A decision submitted as the saves in flight finish, before their tasks are done in the loop's eyes, still
finds a flusher to take it (found by an independent review, and by the hypothesis test of
`test_group_commit.py`, which hung on it until the 300 s timeout)."""

from __future__ import annotations

import asyncio

import pytest

from services.membership.application import Decision
from services.membership.group_commit import GroupCommit
from shared.contract.replies import success


def decision(n: int) -> Decision:
    return Decision(f"org{n}", success({"n": n}, []))


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_decision_submitted_as_the_saves_finish_is_saved_without_another_arrival(in_flight):
    """With in_flight=1 this is the example tests/unit/test_group_commit.py's hypothesis test hangs on
    (arrivals=[4e-249, 4e-249, 0.0], refused={0}, in_flight=1): it never fails, it hangs until the
    300 s pytest timeout. The old `self._flushing.done()` had no such window (done() is true as soon
    as the task returns; the set's discard runs a turn later)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        commits = loop.create_future()  # both saves' replies, read in one turn of the loop

        async def record(decisions: list[Decision]) -> None:
            await commits

        commit = GroupCommit(record, in_flight=in_flight)
        saves = []
        for n in range(1, in_flight + 1):
            saves.append(asyncio.ensure_future(commit.submit(decision(n))))
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # this save is in flight
        assert len(commit._flushers) == in_flight

        third: list[asyncio.Future[None]] = []
        # A command woken in the same turn as the two saves (a thread's decide finishing, say),
        # ahead of them: it submits in the next turn.
        loop.call_soon(lambda: third.append(asyncio.ensure_future(commit.submit(decision(9)))))
        commits.set_result(None)
        await asyncio.gather(*saves)
        await asyncio.sleep(0.05)

        assert third, "the last command was not submitted"
        done, _ = await asyncio.wait(third, timeout=1.0)
        assert done, "the last decision waits for a flusher that nobody starts (no further command arrives)"

    asyncio.run(scenario())
