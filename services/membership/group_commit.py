"""Group commit: the events of commands decided meanwhile are saved in one transaction.

The event store serializes its writers (the library locks the table per insert), so one
transaction for many commands is the way past one commit per command. At most one save
is in flight; whatever arrives during it goes into the next. `submit` is the command runner's
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


class GroupCommit:
    def __init__(self, record: Callable[[list[Decision]], Awaitable[object]]) -> None:
        """`record` saves the decisions (`MembershipApplication.record`), and so fills their `saved`."""
        self._record = record
        self.listeners: list[Callable[[Sequence[Saved]], None]] = []
        self._waiting: list[tuple[Decision, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._last_batch = 1
        self._arrived = asyncio.Event()

    async def submit(self, decision: Decision) -> None:
        """Returns once the decision's events are saved; raises what the save raised."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((decision, done))
        self._arrived.set()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._waiting:
            await self._gather()
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            self._last_batch = len(batch)
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
        """Waits, at most LINGER_SECONDS, until as many decisions wait as the last save took: at low load
        (a last save of one) not at all."""
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        while len(self._waiting) < min(self._last_batch, MAX_BATCH):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
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
