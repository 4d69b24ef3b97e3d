"""The consumer discipline on real NATS and PostgreSQL, with a small projection that logs what it applies."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import asyncpg
import msgspec
import nats
import pytest

from shared import subjects
from shared.bus import declare_streams
from shared.consumer import ConsumerSettings, ProjectionConsumer, prepare
from shared.contract.events import MAX_NESTING
from shared.dead_letters import parked as dead_letters

POISON = "poison@example.com"


class AppliedLog:
    """Records each applied event; refuses to apply one whose email is POISON."""

    schema = "applied_log"

    async def create_tables(self, connection):
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS applied_log.applied "
            "(position bigserial PRIMARY KEY, org_id text, sequence int, event_id text)"
        )

    async def apply(self, connection, events):
        if any(event.data.get("email") == POISON for event in events):
            raise ValueError("this event cannot be projected")
        await connection.executemany(
            "INSERT INTO applied_log.applied (org_id, sequence, event_id) VALUES ($1, $2, $3)",
            [(event.org_id, event.sequence, event.event_id) for event in events],
        )


def envelope(org_id: str, sequence: int, email: str = "a@example.com") -> dict:
    return {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "event_type": "InvitationRevoked",
        "schema_version": 1,
        "org_id": org_id,
        "sequence": sequence,
        "occurred_at": "2026-03-01T00:00:00Z",
        "actor": {"type": "system", "id": "platform"},
        "command_id": "c",
        "correlation_id": None,
        "data": {"invitation_id": "inv_1", "email": email},
    }


async def publish(js, event: dict, msg_id: str | None = None, body: bytes | None = None) -> None:
    headers = {"Nats-Msg-Id": msg_id or event["event_id"]}
    await js.publish(subjects.event(event["org_id"], event["event_type"]), body or msgspec.json.encode(event), headers=headers)


@pytest.fixture
async def log_bus(clean_nats, database_url):
    """JetStream with the streams declared, and a pool on a database with the applied log's schema."""
    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    async with pool.acquire() as connection:
        await prepare(connection, AppliedLog())
    yield nc.jetstream(), pool
    await pool.close()
    await nc.close()


@pytest.fixture
async def stack(clean_nats, database_url):
    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    settings = ConsumerSettings(
        durable="applied-log", service="applied-log", max_attempts=3, retry_delay=0.1, gap_delay=0.1, ack_wait=1.0
    )
    consumer = ProjectionConsumer(nc.jetstream(), pool, AppliedLog(), settings)
    async with pool.acquire() as connection:
        await prepare(connection, consumer.projection)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    yield nc.jetstream(), pool, consumer
    stop.set()
    await task
    await pool.close()
    await nc.close()


async def applied(pool, expected: int, timeout: float = 15.0) -> list[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch("SELECT org_id, sequence FROM applied_log.applied ORDER BY position")
        if len(rows) >= expected or time.monotonic() > deadline:
            return [(r["org_id"], r["sequence"]) for r in rows]
        await asyncio.sleep(0.05)


async def test_an_event_delivered_twice_is_applied_once(stack):
    js, pool, _ = stack
    event = envelope("org-a", 1)
    await publish(js, event)
    await publish(js, event, msg_id="a-second-copy")  # a redelivery JetStream cannot deduplicate
    await publish(js, envelope("org-a", 2))
    assert await applied(pool, 3, timeout=3) == [("org-a", 1), ("org-a", 2)]


async def test_events_out_of_order_are_applied_in_order(stack):
    js, pool, _ = stack
    second, first = envelope("org-b", 2), envelope("org-b", 1)
    await publish(js, envelope("org-c", 1))
    await publish(js, second)
    await publish(js, first)
    rows = await applied(pool, 3)
    assert [row for row in rows if row[0] == "org-b"] == [("org-b", 1), ("org-b", 2)]
    assert ("org-c", 1) in rows


async def test_a_poison_event_is_dead_lettered_and_later_events_still_apply(stack):
    js, pool, _ = stack
    await publish(js, envelope("org-d", 1))
    await publish(js, envelope("org-d", 2, email=POISON))
    await publish(js, envelope("org-d", 3))
    await publish(js, envelope("org-e", 1), body=b"not an envelope")
    assert await applied(pool, 2) == [("org-d", 1), ("org-d", 3)]
    parked = await dead_letters(js, "applied-log")
    errors = sorted(p["error"].split(":")[0] for p in parked)
    assert len(parked) == 2 and errors[0].startswith("ValueError") and errors[1] == "undecodable envelope"


async def test_a_crash_between_commit_and_ack_applies_once(stack, monkeypatch):
    """The batch's one ack is lost: each event is applied once and counted once (when it comes back
    and is acked)."""
    js, pool, consumer = stack
    from nats.aio.msg import Msg

    real_ack = Msg.ack
    lost = {"count": 0}

    async def lose_one_ack(self):
        if lost["count"] == 0:
            lost["count"] += 1
            raise ConnectionError("the process died before its ack")
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", lose_one_ack)
    deliveries = []
    real_handle = consumer.handle

    async def noting_deliveries(messages):
        deliveries.extend(m.metadata.num_delivered for m in messages)
        await real_handle(messages)

    monkeypatch.setattr(consumer, "handle", noting_deliveries)
    await publish(js, envelope("org-f", 1))
    await publish(js, envelope("org-f", 2))
    assert await applied(pool, 2) == [("org-f", 1), ("org-f", 2)]
    await asyncio.sleep(2.5)  # the unacked message comes back after ack_wait, and is skipped
    assert lost["count"] == 1
    assert await applied(pool, 3, timeout=0.5) == [("org-f", 1), ("org-f", 2)]
    assert max(deliveries) >= 2  # it did come back
    state = await js.consumer_info(subjects.STREAM, "applied-log")
    assert state.num_ack_pending == 0
    assert consumer.lag.count == 2


async def test_an_operator_retries_a_dead_letter_once_its_cause_is_fixed(stack, monkeypatch):
    from shared.contract.queries import RetryDeadLetter
    from shared.dead_letters import DeadLetterDesk

    js, pool, consumer = stack
    await publish(js, envelope("org-g", 1, email=POISON))
    await publish(js, envelope("org-g", 2))
    assert await applied(pool, 1) == [("org-g", 2)]
    for _ in range(100):
        letters = await dead_letters(js, "applied-log")
        if letters:
            break
        await asyncio.sleep(0.05)
    monkeypatch.setattr(sys.modules[__name__], "POISON", "nobody@example.com")  # the bug is fixed
    retried = await DeadLetterDesk(consumer).retry(RetryDeadLetter(sequence=letters[0]["sequence"]))
    assert retried["retried"] == letters[0]["sequence"]
    assert await applied(pool, 2) == [("org-g", 2), ("org-g", 1)]
    assert await dead_letters(js, "applied-log") == []


async def test_batches_go_through_one_held_connection_never_given_back_to_the_pool(stack, monkeypatch):
    """Giving a connection back to the pool resets it, a round trip per batch: the consumer holds one."""
    js, pool, _ = stack
    used, released = [], []
    real_apply, real_release = AppliedLog.apply, asyncpg.pool.Pool.release

    async def noting_connection(self, connection, events):
        used.append(connection)
        await real_apply(self, connection, events)

    async def noting_release(self, connection, *, timeout=None):
        released.append(connection)
        await real_release(self, connection, timeout=timeout)

    monkeypatch.setattr(AppliedLog, "apply", noting_connection)
    monkeypatch.setattr(asyncpg.pool.Pool, "release", noting_release)
    for sequence in (1, 2, 3):  # one batch each
        await publish(js, envelope("org-h", sequence))
        assert await applied(pool, sequence) == [("org-h", n) for n in range(1, sequence + 1)]
    assert len(used) >= 3 and all(connection is used[0] for connection in used)
    assert not any(connection is used[0] for connection in released)


async def test_a_lost_connection_is_replaced_and_no_event_is_dead_lettered(stack):
    """PostgreSQL ends the consumer's session (a restart, say): the next batch gets a new connection."""
    js, pool, _ = stack
    await publish(js, envelope("org-i", 1))
    assert await applied(pool, 1) == [("org-i", 1)]
    terminated = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert terminated >= 1
    for sequence in (2, 3, 4):
        await publish(js, envelope("org-i", sequence))
    assert await applied(pool, 4) == [("org-i", n) for n in range(1, 5)]
    assert await dead_letters(js, "applied-log") == []


async def test_after_postgresql_is_killed_and_restarted_the_next_events_apply(stack, postgres_server):
    """The held connection died with the server: the next batch takes a new one, nothing is dead-lettered."""
    js, pool, _ = stack
    await publish(js, envelope("org-j", 1))
    assert await applied(pool, 1) == [("org-j", 1)]
    postgres_server.kill()
    await asyncio.to_thread(postgres_server.start)
    for sequence in (2, 3):
        await publish(js, envelope("org-j", sequence))
    assert await applied(pool, 3) == [("org-j", n) for n in range(1, 4)]
    assert await dead_letters(js, "applied-log") == []


async def test_an_explicit_durable_is_moved_to_ack_all_at_its_ack_floor(clean_nats, database_url):
    """A durable of an earlier version (EXPLICIT acks) with a backlog partly acked: after start the
    consumer acks ALL, starts at the old ack floor + 1, and nothing is lost or applied twice."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from shared.contract.events import decode_envelope

    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    js = nc.jetstream()
    events = [envelope("org-m", sequence) for sequence in range(1, 11)]
    for event in events:
        await publish(js, event)
    await js.add_consumer(
        subjects.STREAM,
        ConsumerConfig(durable_name="applied-log", ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30),
    )
    old = await js.pull_subscribe_bind("applied-log", subjects.STREAM)
    delivered = await old.fetch(6, timeout=5)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as connection:  # the old version applied the first six, acked four of them and the sixth
        await prepare(connection, AppliedLog())
        await AppliedLog().apply(connection, [decode_envelope(msgspec.json.encode(e)) for e in events[:6]])
        await connection.execute("INSERT INTO applied_log.positions VALUES ('org-m', 6)")
    for message in delivered[:4] + delivered[5:6]:
        await message.ack()
    await nc.flush()
    assert (await js.consumer_info(subjects.STREAM, "applied-log")).ack_floor.stream_seq == 4

    settings = ConsumerSettings(durable="applied-log", service="applied-log", retry_delay=0.1, gap_delay=0.1, ack_wait=1.0)
    consumer = ProjectionConsumer(js, pool, AppliedLog(), settings)
    seen: list[int] = []
    real_handle = consumer.handle

    async def noting(messages):
        seen.extend(m.metadata.sequence.stream for m in messages)
        await real_handle(messages)

    consumer.handle = noting
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        assert await applied(pool, 10) == [("org-m", s) for s in range(1, 11)]
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        assert info.config.ack_policy == AckPolicy.ALL
        assert seen[0] == 5  # from the floor: not a replay from the first message
        assert await eventually_settled(js)
        assert await applied(pool, 11, timeout=0.5) == [("org-m", s) for s in range(1, 11)]  # nothing twice
    finally:
        stop.set()
        await task
        await pool.close()
        await nc.close()


async def eventually_settled(js) -> bool:
    for _ in range(100):
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        if info.num_ack_pending == 0 and info.ack_floor.stream_seq == 10:
            return True
        await asyncio.sleep(0.1)
    return False


async def until(condition, attempts: int = 300) -> bool:
    """Whether `condition()` (a coroutine function) turns true, polled every 50 ms."""
    for _ in range(attempts):
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_an_instance_that_takes_the_pull_lock_back_still_acks(clean_nats, database_url):
    """A holds a nak'd event (a gap) when it loses the pull lock; B applies and acks everything, then
    stops; A takes the lock back. What A held before is forgotten, so it acks again: with a stale
    entry it never would, the durable would fill max_ack_pending and later events never apply."""
    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    js = nc.jetstream()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
    settings = ConsumerSettings(
        durable="applied-log", service="applied-log", batch_size=2, retry_delay=0.1, gap_delay=0.3, ack_wait=1.0
    )  # max_ack_pending 20
    a, b = ProjectionConsumer(js, pool, AppliedLog(), settings), ProjectionConsumer(js, pool, AppliedLog(), settings)
    async with pool.acquire() as connection:
        await prepare(connection, a.projection)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    task_b: asyncio.Task[None] | None = None

    async def a_holds_the_gap() -> bool:
        return a.acks.held == 1

    async def settled_through_2() -> bool:
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 2

    try:
        await publish(js, envelope("org-x", 2))  # before its predecessor: A naks it
        assert await until(a_holds_the_gap)
        task_b = asyncio.create_task(b.run(stop_b))
        await pool.execute(  # A's pull lock is lost (that connection ended); B, standing by, takes it
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid::bigint = (hashtext($1)::bigint & 4294967295)",
            f"pull:{subjects.STREAM}:applied-log",
        )
        await publish(js, envelope("org-x", 1))
        assert await applied(pool, 2) == [("org-x", 1), ("org-x", 2)]
        assert await until(settled_through_2)
        stop_b.set()
        await task_b
        task_b = None
        for sequence in range(1, 31):  # more than max_ack_pending: A, pulling again, must ack
            await publish(js, envelope("org-y", sequence))
        rows = await applied(pool, 32)
        assert rows[2:] == [("org-y", n) for n in range(1, 31)]
    finally:
        stop_a.set()
        stop_b.set()
        await task_a
        if task_b is not None:
            await task_b
        await pool.close()
        await nc.close()


async def test_an_event_waiting_for_a_gap_too_long_is_parked_and_the_other_organizations_go_on(clean_nats, database_url):
    """Under the one ack a nak'd event ahead of its organization's position holds every organization
    (max_ack_pending fills). Past `gap_patience` it is parked as waiting, its organization's position
    unmoved; retried while the gap is open it stays parked; retried once the gap has filled it
    applies, once."""
    from shared.contract.queries import RetryDeadLetter
    from shared.dead_letters import DeadLetterDesk
    from shared.errors import Conflict, NotFound

    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    js = nc.jetstream()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    settings = ConsumerSettings(
        durable="applied-log", service="applied-log", batch_size=2, retry_delay=0.1, gap_delay=0.2, ack_wait=1.0, gap_patience=1.0
    )  # max_ack_pending 20
    consumer = ProjectionConsumer(js, pool, AppliedLog(), settings)
    async with pool.acquire() as connection:
        await prepare(connection, consumer.projection)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))

    async def position() -> int:
        return await pool.fetchval("SELECT last_sequence FROM applied_log.positions WHERE org_id = 'org-gap'")

    async def parked_and_settled() -> bool:
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        return info.num_ack_pending == 0 and len(await dead_letters(js, "applied-log")) == 1

    try:
        await publish(js, envelope("org-gap", 1))
        await publish(js, envelope("org-gap", 3))  # its predecessor never comes (a bogus event, say)
        for sequence in range(1, 41):
            await publish(js, envelope("org-ok", sequence))
        rows = await applied(pool, 41)
        assert rows == [("org-gap", 1)] + [("org-ok", n) for n in range(1, 41)]
        assert await until(parked_and_settled)
        [letter] = await dead_letters(js, "applied-log")
        assert letter["original_stream_sequence"] == "2"
        assert letter["error"].startswith("waits for sequence 2 of org org-gap since ")
        assert await position() == 1  # not moved past it: sequence 2, when it comes, is no duplicate

        desk = DeadLetterDesk(consumer)
        with pytest.raises(Conflict, match="still waits for sequence 2 of org org-gap"):
            await desk.retry(RetryDeadLetter(sequence=letter["sequence"]))
        assert len(await dead_letters(js, "applied-log")) == 1  # left parked

        await publish(js, envelope("org-gap", 2))  # the gap fills
        assert (await applied(pool, 42))[-1] == ("org-gap", 2)
        retried = await desk.retry(RetryDeadLetter(sequence=letter["sequence"]))
        assert retried["applied"] is True
        with pytest.raises(NotFound):
            await desk.retry(RetryDeadLetter(sequence=letter["sequence"]))
        rows = await applied(pool, 44, timeout=1)
        assert rows[41:] == [("org-gap", 2), ("org-gap", 3)]  # each once
        assert await position() == 3
        assert await dead_letters(js, "applied-log") == []
    finally:
        stop.set()
        await task
        await pool.close()
        await nc.close()


def position_gauge(durable: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("team_members_consumer_position", {"consumer": durable})


async def acked_through(js, durable: str, last: int) -> bool:
    async def settled() -> bool:
        info = await js.consumer_info(subjects.STREAM, durable)
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == last

    return await until(settled)


def consumer_on(
    js, pool, durable: str, projection: AppliedLog | None = None, **settings
) -> tuple[ProjectionConsumer, asyncio.Event, asyncio.Task[None]]:
    consumer = ProjectionConsumer(
        js,
        pool,
        projection or AppliedLog(),
        ConsumerSettings(durable=durable, service=durable, **{"retry_delay": 0.1, "gap_delay": 0.1, "ack_wait": 1.0, **settings}),
    )
    stop = asyncio.Event()
    return consumer, stop, asyncio.create_task(consumer.run(stop))


async def test_the_position_and_the_lag_follow_the_ack_that_passes_a_gap(stack):
    """Stream sequence 1 waits for sequence 2 (same organization): the first batch applies 2 but
    cannot ack past 1; the later ack covers both. The position is what is acked, each event measured once."""
    js, pool, consumer = stack
    await publish(js, envelope("org-m", 2))
    await publish(js, envelope("org-m", 1))
    assert await applied(pool, 2) == [("org-m", 1), ("org-m", 2)]
    assert await acked_through(js, "applied-log", 2)

    async def both_measured() -> bool:
        return consumer.lag.count == 2

    assert await until(both_measured)
    assert position_gauge("applied-log") == 2


async def test_the_position_and_the_lag_after_a_restart_that_acks_what_the_last_run_applied(log_bus, monkeypatch):
    """The first instance applies three events and stops before any ack; the next one finds them
    pending (a restart: it acks them through the consumer's info), and measures them then, once."""
    from nats.aio.msg import Msg

    js, pool = log_bus
    real_ack = Msg.ack

    async def dead_before_ack(self):
        raise ConnectionError("killed before the ack")

    monkeypatch.setattr(Msg, "ack", dead_before_ack)
    for sequence in (1, 2, 3):
        await publish(js, envelope("org-r", sequence))
    first, stop, task = consumer_on(js, pool, "restarted", max_attempts=3)
    try:
        assert await applied(pool, 3) == [("org-r", n) for n in (1, 2, 3)]
    finally:
        stop.set()
        await task
    monkeypatch.setattr(Msg, "ack", real_ack)

    second, stop, task = consumer_on(js, pool, "restarted", max_attempts=3)
    try:
        assert await acked_through(js, "restarted", 3)

        async def all_measured() -> bool:
            return first.lag.count + second.lag.count == 3

        assert await until(all_measured)
        assert position_gauge("restarted") == 3
        assert await applied(pool, 4, timeout=0.2) == [("org-r", n) for n in (1, 2, 3)]
        assert (first.lag.count, second.lag.count) == (0, 3)
    finally:
        stop.set()
        await task


async def test_an_organization_stuck_at_a_gap_has_its_later_events_parked_at_once(log_bus):
    """org-e's first event cannot be decoded (dead-lettered, its position unmoved): each later org-e
    event waits for it. The first waits `gap_patience` and is parked; the others, waiting for the
    same sequence, are parked at once instead of each holding every organization's ack for another
    `gap_patience`. The other organizations project. Once the gap is repaired, the parked events
    retried in order apply, each once."""
    from shared.contract.queries import RetryDeadLetter
    from shared.dead_letters import DeadLetterDesk
    from shared.errors import NotFound

    js, pool = log_bus
    broken = envelope("org-e", 1)
    broken["occurred_at"] = "not a time"
    await publish(js, broken, body=msgspec.json.encode(broken))
    # batch_size 2: max_ack_pending 20, so org-e 3, 4 and 5, each 25 messages after the one before, are
    # first delivered once the one before is handled. Patience 1 s: 11 deliveries 0.1 s apart.
    for later in (2, 3, 4, 5):
        await publish(js, envelope("org-e", later))
        for sequence in range(25 * (later - 2) + 1, 25 * (later - 1) + 1):
            await publish(js, envelope("org-z", sequence))
    consumer, stop, task = consumer_on(js, pool, "applied-log", batch_size=2, gap_patience=1.0)
    waiting = "waits for sequence 1 of org org-e since "

    async def gap_letters() -> list[dict]:
        return [letter for letter in await dead_letters(js, "applied-log") if letter["error"].startswith("waits for")]

    async def all_parked_and_acked() -> bool:
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        return info.num_ack_pending == 0 and info.num_pending == 0 and len(await gap_letters()) == 4

    try:
        rows = await applied(pool, 100)
        assert rows == [("org-z", n) for n in range(1, 101)]
        assert await until(all_parked_and_acked)
        letters = await gap_letters()
        assert all(letter["error"].startswith(waiting) for letter in letters)
        deliveries = [int(letter["error"].rsplit("parked after ", 1)[1].split()[0]) for letter in letters]
        patience = consumer.settings.gap_deliveries()
        assert deliveries[0] >= patience
        assert all(n < patience for n in deliveries[1:]), deliveries  # not waited for again

        await publish(js, envelope("org-e", 1))  # the repair: the event again, decodable
        assert await applied(pool, 101) == [*rows, ("org-e", 1)]
        desk = DeadLetterDesk(consumer)
        for letter in letters:
            assert (await desk.retry(RetryDeadLetter(sequence=letter["sequence"])))["applied"] is True
        for letter in letters:
            with pytest.raises(NotFound):
                await desk.retry(RetryDeadLetter(sequence=letter["sequence"]))
        await publish(js, envelope("org-e", 6))  # after the gap: applied as usual
        assert await applied(pool, 106) == rows + [("org-e", n) for n in range(1, 7)]
        assert await applied(pool, 107, timeout=0.5) == rows + [("org-e", n) for n in range(1, 7)]  # each once
    finally:
        stop.set()
        await task


async def test_of_two_instances_on_one_durable_only_one_pulls(log_bus, monkeypatch):
    """The pull lock: with two instances running, every fetch comes from the one holding it (two
    pullers would each miss the other's deliveries, and neither ack while traffic lasts)."""
    from shared.pull import BatchPull

    js, pool = log_bus
    pullers: set[int] = set()
    real_fetch = BatchPull.fetch

    async def noting_who_pulls(self, *args, **kwargs):
        pullers.add(id(self))
        return await real_fetch(self, *args, **kwargs)

    monkeypatch.setattr(BatchPull, "fetch", noting_who_pulls)
    _, stop_a, task_a = consumer_on(js, pool, "applied-log")
    _, stop_b, task_b = consumer_on(js, pool, "applied-log")
    try:
        for sequence in range(1, 21):
            await publish(js, envelope("org-p", sequence))
        assert await applied(pool, 20) == [("org-p", n) for n in range(1, 21)]
        await asyncio.sleep(1.5)  # the other instance retries the lock every retry_delay: it had its chances
        assert len(pullers) == 1
    finally:
        stop_a.set()
        stop_b.set()
        await task_a
        await task_b


FLAKY = "flaky@example.com"


class FailsTwice(AppliedLog):
    """Refuses a batch holding the FLAKY event twice (its batch, then its one-event transaction): one
    delivery that fails, as a deadlock or a timeout would, then it applies."""

    def __init__(self) -> None:
        self.failures = 0

    async def apply(self, connection, events):
        if self.failures < 2 and any(event.data.get("email") == FLAKY for event in events):
            self.failures += 1
            raise ConnectionError("transient")
        await super().apply(connection, events)


async def test_an_event_behind_a_failing_one_waits_even_after_its_organization_had_a_gap_parked(log_bus):
    # Found by the contract review: once a bogus event far ahead had been parked for its gap, the real
    # next event failing once got the one behind it parked at once, and the organization needed an operator.
    js, pool = log_bus
    projection = FailsTwice()  # the applied log's schema, prepared by log_bus
    settings = ConsumerSettings(
        durable="applied-log", service="applied-log", retry_delay=0.1, gap_delay=0.1, ack_wait=1.0, gap_patience=1.0
    )
    stop = asyncio.Event()
    task = asyncio.create_task(ProjectionConsumer(js, pool, projection, settings).run(stop))

    async def one_letter_and_settled() -> bool:
        info = await js.consumer_info(subjects.STREAM, "applied-log")
        return info.num_ack_pending == 0 and len(await dead_letters(js, "applied-log")) == 1

    try:
        await publish(js, envelope("org-b", 1))
        await publish(js, envelope("org-b", 99))  # bogus, far ahead: parked after gap_patience
        assert await applied(pool, 1) == [("org-b", 1)]
        assert await until(one_letter_and_settled)
        await publish(js, envelope("org-b", 2, email=FLAKY))  # fails once, then applies
        await publish(js, envelope("org-b", 3))  # waits behind it
        assert await applied(pool, 3) == [("org-b", 1), ("org-b", 2), ("org-b", 3)]
        letters = await dead_letters(js, "applied-log")
        assert len(letters) == 1 and "it is sequence 99" in letters[0]["error"]  # only the bogus one parked
    finally:
        stop.set()
        await task


class NotesBatches(AppliedLog):
    """Notes how many events each batch it applies holds."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def apply(self, connection, events):
        self.batches.append(len(events))
        await super().apply(connection, events)


async def test_after_a_batch_that_did_not_fill_the_consumer_lingers_and_the_next_gathers_what_came_meanwhile(log_bus):
    """Events published one at a time while the consumer lingers after the first arrive as one batch;
    without the linger each would be fetched as soon as it came, in batches of one or two."""
    js, pool = log_bus
    projection = NotesBatches()
    _, stop, task = consumer_on(js, pool, "applied-log", projection, linger=2.0)
    try:
        await publish(js, envelope("org-l", 1))
        assert await applied(pool, 1) == [("org-l", 1)]
        for sequence in range(2, 22):
            await publish(js, envelope("org-l", sequence))
            await asyncio.sleep(0.01)  # a trickle: each is in the stream well before the next
        assert await applied(pool, 21) == [("org-l", n) for n in range(1, 22)]
        assert projection.batches == [1, 20]
    finally:
        stop.set()
        await task


async def test_a_full_batch_is_followed_by_the_next_fetch_at_once(log_bus):
    """A consumer behind the stream never lingers: 250 waiting events go in batches of 100, 100, 50
    long before one linger of a minute would have passed."""
    js, pool = log_bus
    for sequence in range(1, 251):
        await publish(js, envelope("org-f", sequence))
    projection = NotesBatches()
    _, stop, task = consumer_on(js, pool, "applied-log", projection, batch_size=100, linger=60.0)
    try:
        assert await applied(pool, 250, timeout=20) == [("org-f", n) for n in range(1, 251)]
        assert projection.batches == [100, 100, 50]
    finally:
        stop.set()
        await task


async def test_a_pause_cuts_an_idle_fetch_short_and_what_comes_after_it_still_applies(log_bus, monkeypatch):
    """A rebuild's swap pauses the consumer. On an idle stream the consumer is waiting in a fetch; the
    pause ends that fetch instead of waiting it out (a minute here). The server still holds the request
    open and delivers what comes next to it: the next fetch hands that over at once, neither waiting out
    its own minute-long request nor dropping it to a redelivery (a minute away too)."""
    js, pool = log_bus
    monkeypatch.setattr(ProjectionConsumer, "FETCH_WAIT", 60.0)
    consumer, stop, task = consumer_on(js, pool, "applied-log", ack_wait=60.0)
    try:
        await publish(js, envelope("org-i", 1))
        assert await applied(pool, 1) == [("org-i", 1)]
        await asyncio.sleep(0.3)  # past the linger: in its next fetch, waiting on an idle stream
        assert consumer._pull is not None and consumer._pull._done is not None
        async with asyncio.timeout(20):  # a minute if the pause waited the fetch out
            async with consumer.paused():
                await publish(js, envelope("org-i", 2))
                for _ in range(500):  # until it is delivered to the request cut short
                    if consumer._pull._collected:
                        break
                    await asyncio.sleep(0.01)
        assert await applied(pool, 2, timeout=10) == [("org-i", 1), ("org-i", 2)]
        await publish(js, envelope("org-i", 3))  # while the cut request may still be open on the server
        assert await applied(pool, 3, timeout=10) == [("org-i", 1), ("org-i", 2), ("org-i", 3)]
    finally:
        stop.set()
        if consumer._pull is not None:  # in its minute-long fetch again
            consumer._pull.cut_short()
        await task


async def lingering(js, pool, linger: float):
    """A consumer that has applied a batch of one and is now lingering `linger` seconds."""
    consumer, stop, task = consumer_on(js, pool, "applied-log", NotesBatches(), linger=linger)
    await publish(js, envelope("org-g", 1))
    assert await applied(pool, 1) == [("org-g", 1)]
    await asyncio.sleep(0.3)  # settled and acked: lingering now
    return consumer, stop, task


async def test_stop_ends_a_linger_at_once(log_bus):
    js, pool = log_bus
    _, stop, task = await lingering(js, pool, linger=60.0)
    stop.set()
    async with asyncio.timeout(10):  # the linger's minute if stop did not cut it short
        await task


async def test_a_lingering_consumer_is_paused_at_once(log_bus):
    """A rebuild's swap, a dead letter's retry and billing's renewals take `paused()`: the linger is
    outside the consumer's turn, so they never wait it out."""
    js, pool = log_bus
    consumer, stop, task = await lingering(js, pool, linger=60.0)
    try:
        async with asyncio.timeout(10):
            async with consumer.paused():
                pass
    finally:
        stop.set()
        await task


@pytest.mark.parametrize(
    ("inserted", "why"),
    [
        (b'"deep":' + b"[" * 1500 + b"1" + b"]" * 1500, f"JSON nested more than {MAX_NESTING} levels deep"),
        (b'"bad":"\xff\xfe"', "JSON text that is not UTF-8"),
    ],
    ids=["nested-1500-deep", "not-utf8"],
)
async def test_an_event_msgspec_refuses_in_its_own_way_is_parked_undecodable_and_the_events_behind_it_apply(
    log_bus, inserted: bytes, why: str
):
    """Found by review: nested about 1,500 levels, or holding text that is not UTF-8, an event made msgspec
    raise RecursionError or UnicodeDecodeError, which the consumer did not expect: its batch failed on
    every delivery, and nothing behind it ever applied."""
    js, pool = log_bus
    poison = envelope("org-bad", 1)
    await publish(js, poison, body=msgspec.json.encode(poison).replace(b'"data":{', b'"data":{' + inserted + b",", 1))
    for sequence in range(1, 4):
        await publish(js, envelope("org-fine", sequence))
    _, stop, task = consumer_on(js, pool, "applied-log")
    try:
        assert await applied(pool, 3) == [("org-fine", 1), ("org-fine", 2), ("org-fine", 3)]
        parked = await dead_letters(js, "applied-log")
        assert [letter["error"] for letter in parked] == [f"undecodable envelope: {why}"]
    finally:
        stop.set()
        await task
