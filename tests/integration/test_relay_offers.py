"""The relay publishes what its own process saved from memory (`Relay.offer`), and reads the store for
anything else: on real PostgreSQL and NATS, the stream always equals the store, in order, once each."""

from __future__ import annotations

import asyncio
import contextlib
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
from services.membership.application import MembershipApplication, Saved
from services.membership.idempotency import CommandFingerprint
from services.membership.publication import NOTIFICATION_HEADER
from services.membership.relay import Relay
from services.membership.secrets import Secrets
from shared import subjects
from shared.bus import connect, declare_streams
from shared.clock import FixedClock
from shared.contract import commands as cmd
from shared.settings import postgres_env

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OWNER = {"type": "user", "id": "owner-1"}


class Writer:
    """One membership instance's application, creating organizations of its own (one event each)."""

    def __init__(self, name: str, database_url: str) -> None:
        self.name = name
        self.app = MembershipApplication(FixedClock(T0), Secrets("test-secret"), env=postgres_env(database_url, pool_size=2))
        self.created = 0

    def save(self, organizations: int) -> list[Saved]:
        """One transaction of `organizations` creations; what `MembershipApplication.record` returns."""
        decisions = []
        for _ in range(organizations):
            self.created += 1
            org_id = f"{self.name}-{self.created}"
            body = msgspec.convert(
                {
                    "command_id": f"create-{org_id}",
                    "actor": OWNER,
                    "org_id": org_id,
                    "name": org_id,
                    "plan": "pro",
                    "owner": {"user_id": "owner-1", "email": "o@x.io"},
                },
                cmd.CreateOrganization,
            )
            decisions.append(self.app.decide(org_id, "create_organization", body, CommandFingerprint.of("x", body)))
        return self.app.record(decisions)


def counting_selects(app: MembershipApplication) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    select = app.recorder.select_notifications

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return select(*args, **kwargs)

    app.recorder.select_notifications = counted  # type: ignore[method-assign]
    return calls


async def eventually(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def relaying(app: MembershipApplication, nats_url: str, database_url: str) -> AsyncIterator[Relay]:
    nc = await connect(nats_url)
    relay = Relay(app, nc, database_url, batch_size=8)
    task = asyncio.create_task(relay.run())
    try:

        async def ready() -> bool:
            return relay.active and relay.reads > 0

        await eventually(ready)
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def the_stream(nc: Any) -> list[tuple[int, str]]:
    """(notification id, event id) of every message on the stream, in stream order."""
    js = nc.jetstream()
    total = (await js.stream_info(subjects.STREAM)).state.messages
    messages = []
    for seq in range(1, total + 1):
        message = await js.get_msg(subjects.STREAM, seq)
        assert message.headers is not None
        messages.append((int(message.headers[NOTIFICATION_HEADER]), msgspec.json.decode(message.data)["event_id"]))
    return messages


def the_store(app: MembershipApplication) -> list[tuple[int, str]]:
    return [(n.id, app.mapper.to_domain_event(n).event_id) for n in app.recorder.select_notifications(1, 10**6)]


async def stream_equals_store(nc: Any, app: MembershipApplication) -> None:
    async def caught_up() -> bool:
        return (await nc.jetstream().stream_info(subjects.STREAM)).state.messages >= len(the_store(app))

    await eventually(caught_up)
    assert await the_stream(nc) == the_store(app)  # each event once, in the store's order


@pytest.fixture
async def writers(database_url: str, clean_nats: str) -> AsyncIterator[tuple[Writer, Writer]]:
    await declare_streams(clean_nats)
    ours, theirs = Writer("ours", database_url), Writer("theirs", database_url)
    yield ours, theirs
    ours.app.close()
    theirs.app.close()


async def test_what_this_process_saved_is_published_without_reading_the_store(writers, nc, clean_nats, database_url, monkeypatch):
    monkeypatch.setattr(relay_module, "NOTIFY_GRACE_SECONDS", 3600.0)  # only a gap makes it read
    monkeypatch.setattr(relay_module, "IDLE_READ_SECONDS", 3600.0)
    ours, theirs = writers
    selects = counting_selects(ours.app)
    async with relaying(ours.app, clean_nats, database_url) as relay:
        reads_when_ready = len(selects)
        for size in [1, 3, 1, 20, 2] * 4:
            relay.offer(await asyncio.to_thread(ours.save, size))
        await stream_equals_store(nc, theirs.app)
        assert len(selects) == reads_when_ready
        assert relay.position == len(the_store(theirs.app))


async def test_another_instance_s_events_are_read_from_the_store_in_their_place(
    writers, nc, clean_nats, database_url, monkeypatch
):
    monkeypatch.setattr(relay_module, "NOTIFY_GRACE_SECONDS", 3600.0)  # only the gap makes it read
    monkeypatch.setattr(relay_module, "IDLE_READ_SECONDS", 3600.0)
    ours, theirs = writers
    selects = counting_selects(ours.app)
    async with relaying(ours.app, clean_nats, database_url) as relay:
        reads_when_ready = len(selects)
        relay.offer(await asyncio.to_thread(ours.save, 2))
        await asyncio.to_thread(theirs.save, 3)  # ids 3..5: never offered here
        relay.offer(await asyncio.to_thread(ours.save, 2))  # 6..7 follow a gap: the store fills it
        await stream_equals_store(nc, theirs.app)
        assert len(selects) > reads_when_ready


# What happens between relay starts: this process saves and offers, saves and offers later (after other
# saves, so offers come out of order), saves without offering (an offer lost), another instance saves,
# or the relay gets a turn.
Step = tuple[str, int]
steps = st.lists(
    st.tuples(st.sampled_from(["offered", "offered later", "not offered", "theirs", "turn"]), st.integers(1, 12)),
    max_size=12,
)


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(runs=st.lists(steps, min_size=1, max_size=3))
def test_the_stream_is_the_store_whatever_the_offers_and_other_writers(
    runs: list[list[Step]], database_url, clean_nats, monkeypatch
):
    # A NOTIFY rarely makes it read before the next step: the offers and their gaps decide.
    monkeypatch.setattr(relay_module, "NOTIFY_GRACE_SECONDS", 0.2)
    asyncio.run(_interleave(runs, database_url, clean_nats))


async def _interleave(runs: list[list[Step]], database_url: str, nats_url: str) -> None:
    await declare_streams(nats_url)
    example = uuid.uuid4().hex[:8]
    ours, theirs = Writer(f"ours-{example}", database_url), Writer(f"theirs-{example}", database_url)
    nc = await connect(nats_url)
    try:
        for run in runs:  # each run a relay of its own, resuming from the stream
            async with relaying(ours.app, nats_url, database_url) as relay:
                later: list[list[Saved]] = []
                for step, size in run:
                    if step == "turn":
                        await asyncio.sleep(0.001 * size)
                    elif step == "theirs":
                        await asyncio.to_thread(theirs.save, size)
                    else:
                        saved = await asyncio.to_thread(ours.save, size)
                        if step == "offered":
                            relay.offer(saved)
                        elif step == "offered later":
                            later.append(saved)
                for saved in reversed(later):
                    relay.offer(saved)
                await stream_equals_store(nc, ours.app)
    finally:
        await nc.close()
        ours.app.close()
        theirs.app.close()
