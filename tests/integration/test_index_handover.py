"""The access index between the stream and the relay: while this process holds the relay's lock its
relay feeds the index and the follower's subscription stands down; the handovers either way lose
nothing. Two membership instances in one process (each its application, index, follower and relay, as
`bootstrap` wires them), on real PostgreSQL and NATS; only one relay holds the lock at a time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.membership import relay as relay_module
from services.membership.access_index import AccessIndex, IndexFollower, stream_position
from services.membership.application import Decision, MembershipApplication
from services.membership.idempotency import CommandFingerprint
from services.membership.relay import Relay
from services.membership.secrets import Secrets
from shared.bus import connect, declare_streams
from shared.clock import FixedClock
from shared.contract import commands as cmd
from shared.database import single_active
from shared.settings import postgres_env

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OWNER = {"type": "user", "id": "owner-1"}


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


class Instance:
    """One membership instance: commands decided and saved as the runner does (the index adopts each
    saved decision, the relay is offered what was saved), an index built and followed as bootstrap does."""

    def __init__(self, name: str, database_url: str, nats_url: str) -> None:
        self.name = name
        self.database_url = database_url
        self.nats_url = nats_url
        self.app = MembershipApplication(FixedClock(T0), Secrets("test-secret"), env=postgres_env(database_url, pool_size=2))
        self.index = AccessIndex(self.app.clock.now)
        self.commands = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_task: asyncio.Task[None] | None = None

    async def start(self, follow: bool = True) -> None:
        self.follower_nc = await connect(self.nats_url)
        self.relay_nc = await connect(self.nats_url)
        js = self.follower_nc.jetstream()
        start = await stream_position(js)
        await asyncio.to_thread(self.index.load, self.app)
        self.follower = IndexFollower(self.index, self.app, js, start + 1)
        self.relay = Relay(self.app, self.relay_nc, self.database_url, batch_size=8, index=self.follower)
        if follow:
            self.follow()

    def follow(self) -> None:
        self._tasks.append(asyncio.create_task(self.follower.run()))

    def start_relay(self) -> None:
        self._relay_task = asyncio.create_task(self.relay.run())

    async def stop_relay(self) -> None:
        assert self._relay_task is not None
        self._relay_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay_task
        self._relay_task = None

    async def command(self, org_id: str, name: str, /, **fields: Any) -> Decision:
        body = msgspec.convert(
            {"command_id": f"{self.name}-{next(self.commands)}", "actor": OWNER, "org_id": org_id, **fields},
            cmd.COMMANDS[name],
        )
        command_name = name

        def decide_and_save() -> Decision:
            decision = self.app.decide(org_id, command_name, body, CommandFingerprint.of(command_name, body))
            if decision.needs_saving:
                decision.saved = self.app.record([decision])
            return decision

        decision = await asyncio.to_thread(decide_and_save)
        self.index.adopt(decision)
        self.relay.offer(decision.saved)
        return decision

    async def create_org(self, org_id: str) -> None:
        decision = await self.command(
            org_id, "create_organization", name=org_id, plan="pro", owner={"user_id": "owner-1", "email": "o@x.io"}
        )
        assert decision.reply.ok, decision.reply

    async def create_key(self, org_id: str) -> str:
        decision = await self.command(org_id, "create_api_key", name="k", permissions=["gateway:use"])
        assert decision.reply.ok, decision.reply
        return str(decision.reply.result["key_id"])  # type: ignore[union-attr]

    async def revoke_key(self, org_id: str, key_id: str) -> None:
        await self.command(org_id, "revoke_api_key", key_id=key_id)  # refused when revoked already: nothing saved

    async def close(self) -> None:
        if self._relay_task is not None:
            await self.stop_relay()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.follower_nc.close()
        await self.relay_nc.close()
        self.app.close()


def rebuilt(app: MembershipApplication) -> Any:
    index = AccessIndex(app.clock.now)
    index.load(app)
    return index.state()


async def equals_the_store(instance: Instance) -> None:
    """The index ends where a rebuild from the store starts (the store is the truth)."""

    def holds() -> bool:
        return instance.index.state() == rebuilt(instance.app)

    await eventually(holds)


def stood_down(instance: Instance) -> bool:
    return instance.follower.subscriptions > 0 and not instance.follower.subscribed


def revoked(instance: Instance, org_id: str, key_id: str) -> bool:
    return any(
        access.status == "revoked"
        for access in instance.index.by_hash.values()
        if (access.org_id, access.key_id) == (org_id, key_id)
    )


@pytest.fixture
def quick_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting relay tries the lock every 50 ms, not every second: handovers in a test's time."""
    monkeypatch.setattr(relay_module, "single_active", functools.partial(single_active, retry_seconds=0.05))


@contextlib.asynccontextmanager
async def instances(database_url: str, nats_url: str, *names: str, follow: bool = True) -> AsyncIterator[list[Instance]]:
    await declare_streams(nats_url)
    started = [Instance(name, database_url, nats_url) for name in names]
    try:
        for instance in started:
            await instance.start(follow)
        yield started
    finally:
        for instance in started:
            await instance.close()


async def test_another_instance_s_events_reach_the_index_through_the_relay_while_the_follower_stands_down(
    database_url, clean_nats, quick_lock
):
    async with instances(database_url, clean_nats, "ours", "theirs") as (ours, theirs):
        ours.start_relay()
        await eventually(lambda: ours.relay.active)
        theirs.start_relay()  # waits for the lock
        await ours.create_org("o1")
        await eventually(lambda: stood_down(ours))  # past the stream's end as the relay found it
        await theirs.create_org("o2")
        key_id = await theirs.create_key("o2")
        await theirs.revoke_key("o2", key_id)
        await eventually(lambda: revoked(ours, "o2", key_id))
        await equals_the_store(ours)
        await equals_the_store(theirs)  # its follower: the stream
        assert not ours.follower.subscribed and not theirs.relay.active


async def test_a_backlog_on_the_stream_when_the_relay_takes_the_lock_is_applied_before_the_follower_stands_down(
    database_url, clean_nats, quick_lock
):
    async with instances(database_url, clean_nats, "ours", "theirs", follow=False) as (ours, theirs):
        theirs.follow()
        theirs.start_relay()
        await eventually(lambda: theirs.relay.active)
        # Published by their relay after our index was built; our follower has not received any of it.
        await theirs.create_org("backlog")
        key_id = await theirs.create_key("backlog")
        await theirs.revoke_key("backlog", key_id)
        await eventually(lambda: theirs.relay.position == 3)
        await theirs.stop_relay()
        ours.start_relay()
        await eventually(lambda: ours.relay.active and ours.relay.position == 3)
        ours.follow()  # only now: the whole backlog is behind the relay's position
        await ours.create_org("after")  # a message past the stream's end: the follower may stand down
        await eventually(lambda: stood_down(ours))
        await eventually(lambda: revoked(ours, "backlog", key_id))
        await equals_the_store(ours)


async def test_after_losing_the_lock_the_new_holder_s_events_reach_the_index_through_the_resumed_follower(
    database_url, clean_nats, quick_lock
):
    async with instances(database_url, clean_nats, "ours", "theirs") as (ours, theirs):
        ours.start_relay()
        await eventually(lambda: ours.relay.active)
        theirs.start_relay()
        await ours.create_org("o1")
        key_id = await ours.create_key("o1")
        await eventually(lambda: stood_down(ours))
        await ours.stop_relay()  # the lock goes to theirs
        await eventually(lambda: theirs.relay.active)
        await eventually(lambda: ours.follower.subscribed and ours.follower.subscriptions == 2)
        await theirs.revoke_key("o1", key_id)
        await theirs.create_org("o2")
        await eventually(lambda: revoked(ours, "o1", key_id))
        await equals_the_store(ours)
        await equals_the_store(theirs)


# What happens on two instances that share a few organizations: one of them saves a command, the relay's
# lock changes hands (the holder's relay stops, the other's takes it, the first waits again), or time passes.
Step = tuple[str, str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["create_key", "revoke_key", "create_org", "handover", "turn"]),
        st.integers(0, 7),
    ),
    max_size=25,
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(run=steps)
def test_both_indexes_equal_the_store_whatever_the_interleaving_and_handovers(
    run: list[Step], database_url, clean_nats, monkeypatch
):
    monkeypatch.setattr(relay_module, "single_active", functools.partial(single_active, retry_seconds=0.05))
    asyncio.run(_interleave(run, database_url, clean_nats))


async def _interleave(run: list[Step], database_url: str, nats_url: str) -> None:
    example = uuid.uuid4().hex[:8]
    async with instances(database_url, nats_url, f"a-{example}", f"b-{example}") as (a, b):
        by_name = {"a": a, "b": b}
        holder, waiting = a, b
        holder.start_relay()
        await eventually(lambda: holder.relay.active)
        waiting.start_relay()
        orgs = [f"{example}-0"]
        await a.create_org(orgs[0])
        keys: list[tuple[str, str]] = []
        for who, what, n in run:
            instance = by_name[who]
            if what == "create_org":
                orgs.append(f"{example}-{len(orgs)}")
                await instance.create_org(orgs[-1])
            elif what == "create_key":
                org_id = orgs[n % len(orgs)]
                keys.append((org_id, await instance.create_key(org_id)))
            elif what == "revoke_key" and keys:
                await instance.revoke_key(*keys[n % len(keys)])
            elif what == "handover":
                await holder.stop_relay()
                await eventually(lambda: waiting.relay.active)  # noqa: B023 (awaited here)
                holder.start_relay()
                holder, waiting = waiting, holder
            elif what == "turn":
                await asyncio.sleep(0.002 * n)
        await equals_the_store(a)
        await equals_the_store(b)
        for org_id, key_id in keys:
            assert revoked(a, org_id, key_id) == revoked(b, org_id, key_id)
