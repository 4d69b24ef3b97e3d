"""The one path every command takes: decide, one organization at a time, then record.

A command is decided first from memory, on the loop, when the organization is cached and the
decision saves events; otherwise (and after the store refused a save) in a thread, after reading
the command's record and the organization's newer events.

How a decision is recorded is the strategy given: the group commit in production
(`group_commit.GroupCommit.submit`), a direct save in unit tests (`save_directly`). Everything
else (the idempotency records, the retries after a concurrent write, the snapshot after the
reply) is the same code in both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import structlog
from eventsourcing.persistence import IntegrityError

from shared.contract import commands as cmd
from shared.contract.replies import Reply, failure

from .application import Decision, MembershipApplication, org_id_for
from .idempotency import CommandFingerprint
from .keyed_lock import KeyedLock

CONFLICT_RETRIES = 5
CONCURRENT_CHANGE = failure("conflict", "the organization changed concurrently; retry the command")

Record = Callable[[Decision], Awaitable[None]]
Saved = Callable[[Decision], None]
T = TypeVar("T")


class CommandRunner:
    def __init__(
        self,
        app: MembershipApplication,
        executor: Executor | None = None,
        record: Record | None = None,
        saved: Saved | None = None,
        known_version: Callable[[str], int] | None = None,
        snapshot: Record | None = None,
    ) -> None:
        """`saved` hears of each decision once its events are saved, before the reply (the access index);
        `known_version` tells an organization's version as last heard of from the stream (the access index
        too), so that a cached copy known to be stale is not decided on from memory. `snapshot` takes a due
        snapshot of a saved decision's organization (the application's, in a thread, unless given)."""
        self.app = app
        self._saved = saved
        self.executor = executor
        self.org_locks = KeyedLock()
        self._record = record or self.save_directly
        self._known_version = known_version or (lambda _: 0)
        self._snapshot = snapshot or self.snapshot_in_thread
        self._background: set[asyncio.Task[Any]] = set()

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def for_org(self, org_id: str, fn: Callable[..., T], *args: Any) -> T:
        """One piece of work per organization at a time: the application shares its cached aggregate."""
        async with self.org_locks.hold(org_id):
            return await self.in_thread(fn, *args)

    async def save_directly(self, decision: Decision) -> None:
        await self.in_thread(self.app.record, [decision])

    async def snapshot_in_thread(self, decision: Decision) -> None:
        await self.in_thread(self.app.snapshot_if_due, decision)

    async def _snapshot_after_reply(self, org_id: str, decision: Decision) -> None:
        async with self.org_locks.hold(org_id):
            await self._snapshot(decision)

    async def run(self, name: str, command: cmd.Command, org_id: str | None = None) -> Reply:
        """`org_id` is the command's organization when the caller has worked it out already."""
        org_id = org_id or org_id_for(command)
        fingerprint = CommandFingerprint.of(name, command)
        async with self.org_locks.hold(org_id):
            for attempt in range(CONFLICT_RETRIES):
                # First from memory, on the loop (no read, no thread); the save refuses it if the store moved on.
                decision = (
                    self.app.decide_from_memory(org_id, command, fingerprint, self._known_version(org_id))
                    if attempt == 0
                    else None
                )
                if decision is None:
                    decision = await self.in_thread(self.app.decide, org_id, name, command, fingerprint)
                if not decision.needs_saving:
                    await self.in_thread(self.app.remember, decision)
                    return decision.reply
                try:
                    await self._record(decision)
                except IntegrityError:
                    continue  # another instance wrote first (events or the record): decide again on what it saved
                if self._saved is not None:
                    self._saved(decision)
                if self.app.snapshot_due(decision):
                    self._in_background(self._snapshot_after_reply(org_id, decision))
                return decision.reply
        return CONCURRENT_CHANGE

    async def settled(self) -> None:
        """Waits for the work started after replies (snapshots)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _in_background(self, work: Awaitable[Any]) -> None:
        """Work after the reply: its failure is logged, never the command's."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._finished_in_background)

    def _finished_in_background(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            structlog.get_logger().error("background work failed", exc_info=task.exception())
