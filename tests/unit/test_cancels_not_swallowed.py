"""A cancel that lands as a wait ends still ends the waiting task (Python 3.11's `asyncio.wait_for`
swallows one that arrives in the same loop iteration as the awaited future completing: gh-86296).

Each wait that is cancelled at shutdown is woken and cancelled with every spacing of a few loop turns
between the two, the exact coincidence included: a task that was still running when cancelled must end
cancelled, not return or run on."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from services.membership.group_commit import GroupCommit
from services.membership.relay import Relay
from services.membership.stream_publisher import Message, StreamPublisher
from shared.periodic import every

Started = tuple[asyncio.Task[Any], Callable[[], None]]  # the waiting task, and what wakes its wait
SPACINGS = list(itertools.product(range(4), repeat=2))  # loop turns before the wake, before the cancel


def after(turns: int, action: Callable[[], object]) -> None:
    if turns == 0:
        action()
    else:
        asyncio.get_running_loop().call_soon(after, turns - 1, action)


async def turns(n: int = 1) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def ends_cancelled_if_cancelled_while_running(start: Callable[[], Awaitable[Started]]) -> None:
    for wake_after, cancel_after in SPACINGS:
        task, wake = await start()
        cancelled_while_running: list[bool] = []
        after(wake_after, wake)
        after(cancel_after, lambda: cancelled_while_running.append(task.cancel()))  # noqa: B023 (run below)
        for _ in range(200):  # loop turns, not time: a task that swallowed the cancel waits on for good
            if task.done() and cancelled_while_running:
                break
            await turns()
        if cancelled_while_running == [True]:
            assert task.cancelled(), f"the cancel was swallowed (wake after {wake_after} turns, cancel after {cancel_after})"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _NoNats:
    def jetstream(self) -> None:
        return None


def idle_relay() -> Relay:
    relay = Relay(cast(Any, None), cast(Any, _NoNats()), "postgresql://unused")
    relay.active = True
    relay._store_has_more = False
    relay._read_every = 3600.0  # no read of the store falls due in the test
    relay._last_read = time.monotonic()
    return relay


async def test_the_relay_s_idle_wait_ends_on_a_cancel_that_lands_as_events_are_offered():
    async def start() -> Started:
        relay = idle_relay()
        task = asyncio.create_task(relay._follow())
        await turns(3)
        return task, relay._new_events.set

    await ends_cancelled_if_cancelled_while_running(start)


async def test_the_relay_ends_on_a_cancel_a_library_call_swallowed():
    """nats-py's `request` (stream_info, get_msg, a bucket's put) waits with 3.11's wait_for: a cancel
    that lands as the reply comes is lost inside the library, and the relay must notice it."""

    async def start() -> Started:
        relay = idle_relay()
        acks: list[asyncio.Future[int]] = []

        async def publish(saved: object) -> int:
            acks.append(asyncio.get_running_loop().create_future())
            return await asyncio.wait_for(acks[-1], 3600)  # as nats-py waits for a reply

        relay._publish = publish  # type: ignore[method-assign]
        relay.offer([(1, cast(Any, object()))])
        task = asyncio.create_task(relay._follow())
        while not acks:
            await turns()
        return task, lambda: acks[0].set_result(1)

    await ends_cancelled_if_cancelled_while_running(start)


class _Nats:
    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: object) -> object:
        return object()

    async def publish(self, subject: str, body: bytes, reply: str, headers: dict[str, str]) -> None:
        pass


async def test_a_publish_ends_on_a_cancel_that_lands_as_the_last_ack_comes():
    async def start() -> Started:
        publisher = StreamPublisher(cast(Any, _Nats()))
        task = asyncio.create_task(publisher.publish([Message("s", b"{}", {})], timeout=3600))
        while not publisher._waiting:
            await turns()
        (batch,) = publisher._waiting.values()
        return task, lambda: batch.acked(1)

    await ends_cancelled_if_cancelled_while_running(start)


async def test_a_group_commit_s_gathering_ends_on_a_cancel_that_lands_as_a_command_arrives():
    async def start() -> Started:
        async def record(decisions: object) -> None:
            await asyncio.get_running_loop().create_future()  # a save that never completes

        group = GroupCommit(record)
        group._batch_to_wait_for = 2  # the gathering waits for a second command
        submitting = asyncio.create_task(group.submit(cast(Any, object())))
        await turns()
        (flusher,) = group._flushers
        submitting.cancel()  # its future is never settled here: only the flusher is under test
        return flusher, group._arrived.set

    await ends_cancelled_if_cancelled_while_running(start)


async def test_the_schedulers_loop_ends_on_a_cancel_that_lands_as_it_is_stopped():
    async def start() -> Started:
        stop = asyncio.Event()

        async def run() -> None:
            pass

        task = asyncio.create_task(every(3600, run, stop, failed="run failed"))
        await turns(3)
        return task, stop.set

    await ends_cancelled_if_cancelled_while_running(start)
