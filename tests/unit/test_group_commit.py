"""The group commit's rhythm: batches, saves in flight, and who hears of what (the store faked)."""

from __future__ import annotations

import asyncio

import pytest
from eventsourcing.persistence import IntegrityError
from hypothesis import given, settings
from hypothesis import strategies as st

from services.membership.application import Decision
from services.membership.group_commit import GroupCommit
from shared.contract.replies import success


def decision(n: int) -> Decision:
    return Decision(f"org{n}", success({"n": n}, []))


class SlowStore:
    """Saves take until released; records what was saved together and how many saves overlapped."""

    def __init__(self, refused: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.refused = refused

    async def record(self, decisions: list[Decision]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            numbers = [int(d.org_id.removeprefix("org")) for d in decisions]
            if self.refused & set(numbers):
                raise IntegrityError("taken")
            self.batches.append(numbers)
        finally:
            self.in_flight -= 1


async def test_a_second_save_is_sent_while_the_first_commits_and_a_third_waits_for_one_of_them():
    store = SlowStore()
    commit = GroupCommit(store.record, in_flight=2)
    first = asyncio.ensure_future(commit.submit(decision(1)))
    await asyncio.sleep(0.01)  # the first save is in flight
    second = asyncio.ensure_future(commit.submit(decision(2)))
    await asyncio.sleep(0.01)
    third = asyncio.ensure_future(commit.submit(decision(3)))
    await asyncio.sleep(0.01)

    assert store.in_flight == 2
    store.release.set()
    await asyncio.gather(first, second, third)

    assert store.most_in_flight == 2
    assert sorted(n for batch in store.batches for n in batch) == [1, 2, 3]
    assert [3] in store.batches  # it waited, then went alone


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_decision_submitted_as_the_last_flusher_returns_is_still_saved(in_flight):
    """The caller answered by a save submits its next decision at once: before the flusher's task has
    finished in the loop's eyes. It must not find that flusher counted as one still to take it."""
    store = SlowStore()
    store.release.set()
    commit = GroupCommit(store.record, in_flight=in_flight)

    async def one_after_the_other() -> None:
        for n in range(5):
            await commit.submit(decision(n))

    await asyncio.wait_for(one_after_the_other(), timeout=10)
    assert [n for batch in store.batches for n in batch] == [0, 1, 2, 3, 4]


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.floats(min_value=0, max_value=0.004), min_size=1, max_size=30),
    refused=st.frozensets(st.integers(0, 29), max_size=3),
    in_flight=st.integers(1, 3),
)
def test_every_decision_is_settled_once_saved_once_or_refused_alone(arrivals, refused, in_flight):
    async def scenario() -> None:
        store = SlowStore(refused)
        store.release.set()
        commit = GroupCommit(store.record, in_flight=in_flight)

        async def arrive(n: int, after: float) -> BaseException | None:
            await asyncio.sleep(after)
            try:
                await commit.submit(decision(n))
            except IntegrityError as failure:
                return failure
            return None

        outcomes = await asyncio.gather(*(arrive(n, after) for n, after in enumerate(arrivals)))

        saved = [n for batch in store.batches for n in batch]
        assert sorted(saved) == sorted(n for n in range(len(arrivals)) if n not in refused)
        for n, outcome in enumerate(outcomes):
            assert (outcome is not None) == (n in refused)
        assert store.most_in_flight <= in_flight

    asyncio.run(scenario())


def test_listeners_hear_each_save_in_notification_order():
    heard: list[list[int]] = []

    async def record(decisions: list[Decision]) -> None:
        for d in decisions:
            d.saved = [(int(d.org_id.removeprefix("org")) * 10 + 1, object()), (int(d.org_id.removeprefix("org")) * 10, object())]

    async def scenario() -> None:
        commit = GroupCommit(record)
        commit.listeners.append(lambda saved: heard.append([n for n, _ in saved]))
        await asyncio.gather(*(commit.submit(decision(n)) for n in (2, 1)))

    asyncio.run(scenario())
    assert heard == [[10, 11, 20, 21]]


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_failure_of_the_store_reaches_every_decision_of_its_batch(in_flight):
    async def record(decisions: list[Decision]) -> None:
        raise OSError("the store is gone")

    commit = GroupCommit(record, in_flight=in_flight)
    outcomes = await asyncio.gather(*(commit.submit(decision(n)) for n in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, OSError) for outcome in outcomes)


async def test_one_short_batch_does_not_teach_the_next_gathering_to_wait_for_fewer():
    store = SlowStore()
    store.release.set()
    commit = GroupCommit(store.record, in_flight=1)
    await asyncio.gather(*(commit.submit(decision(n)) for n in range(16)))
    await commit.submit(decision(16))  # a straggler: saved alone, after the linger
    assert store.batches[-2:] == [list(range(16)), [16]]

    async def arrive(n: int) -> None:
        await asyncio.sleep(0.00015 * (n - 17))  # twelve arrive within the linger (1.65 of its 2 ms), one by one
        await commit.submit(decision(n))

    await asyncio.gather(*(arrive(n) for n in range(17, 29)))
    assert store.batches[-1] == list(range(17, 29))  # waited for them, not for one
