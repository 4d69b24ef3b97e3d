"""Group commit: the events of commands decided meanwhile are saved in one transaction.

The event store serializes its writers (the library locks the table per insert), so one
transaction for many commands is the way past one commit per command. Up to IN_FLIGHT saves
are in flight; whatever arrives meanwhile goes into the next. `submit` is the command runner's
record strategy in production. Each committed save's events (`Saved`) go to the listeners (the
relay) on the loop, before any of its commands is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from operator import itemgetter

from eventsourcing.persistence import IntegrityError

from .application import Decision, Saved

MAX_BATCH = 64
# Under load, the clients answered by one save send their next commands within a moment: a save waits
# that long at most for them, rather than alternating a save of one command and a save of the rest.
LINGER_SECONDS = 0.002
# Saves in flight at once: while one commits, the next batch gathers and is sent; the store's table lock
# orders their events, and each save's listeners hear of it as it completes.
IN_FLIGHT = 2
BATCH_MEMORY_TENTHS = 9  # tenths of the largest recent batch a gathering still waits for, one save later


class GroupCommit:
    def __init__(self, record: Callable[[list[Decision]], Awaitable[object]], in_flight: int = IN_FLIGHT) -> None:
        """`record` saves the decisions (`MembershipApplication.record`), and so fills their `saved`."""
        self._record = record
        self.listeners: list[Callable[[Sequence[Saved]], None]] = []
        self._waiting: list[tuple[Decision, asyncio.Future[None]]] = []
        self._flushers: set[asyncio.Task[None]] = set()  # held, so that a running flusher is never collected
        self._flushing = 0  # flushers not yet returned: counted in the flusher itself, not by a done-callback,
        # which runs a moment after it returned (a decision arriving then would find no flusher to take it)
        self._in_flight = in_flight
        self._gathering = False  # one flusher at a time gathers the next batch
        self._batch_to_wait_for = 1
        self._arrived = asyncio.Event()

    async def submit(self, decision: Decision) -> None:
        """Returns once the decision's events are saved; raises what the save raised."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((decision, done))
        self._arrived.set()
        if not self._gathering and self._flushing < self._in_flight:
            self._flushing += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await done

    async def _flush(self) -> None:
        try:
            await self._flush_while_waiting()
        finally:
            self._flushing -= 1

    async def _flush_while_waiting(self) -> None:
        while self._waiting and not self._gathering:
            self._gathering = True
            try:
                await self._gather()
            finally:
                self._gathering = False
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            # The largest recent batch, forgotten slowly: one short batch (a straggler) does not teach the
            # next gathering to wait for fewer, which would settle into a rhythm of small saves.
            self._batch_to_wait_for = max(len(batch), self._batch_to_wait_for * BATCH_MEMORY_TENTHS // 10)
            try:
                await self._saved([decision for decision, _ in batch])
            except IntegrityError:
                await self._record_one_by_one(batch)  # find the one that conflicted
            except Exception as failure:
                _settle(batch, failure)
            else:
                _settle(batch, None)

    async def _saved(self, decisions: list[Decision]) -> None:
        await self._record(decisions)
        saved = sorted((pair for decision in decisions for pair in decision.saved), key=itemgetter(0))
        if saved:
            for listener in self.listeners:
                listener(saved)

    async def _gather(self) -> None:
        """Waits, at most LINGER_SECONDS, until as many decisions wait as recent saves took: at low load
        (saves of one) not at all."""
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        while len(self._waiting) < min(self._batch_to_wait_for, MAX_BATCH):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):  # not `wait_for`: on 3.11 it can swallow a cancel
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def _record_one_by_one(self, batch: list[tuple[Decision, asyncio.Future[None]]]) -> None:
        for decision, done in batch:
            try:
                await self._saved([decision])
            except Exception as failure:
                _settle([(decision, done)], failure)
            else:
                _settle([(decision, done)], None)


def _settle(batch: list[tuple[Decision, asyncio.Future[None]]], failure: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if failure is None:
            done.set_result(None)
        else:
            done.set_exception(failure)
