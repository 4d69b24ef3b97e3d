"""The relay's publisher on a real NATS server: a batch returns once the stream holds every message of it,
and fails when any one of them is not stored; concurrent batches never take each other's acks."""

from __future__ import annotations

import asyncio

import pytest

from services.membership.stream_publisher import Message, PublishRefused, StreamPublisher
from shared import subjects
from shared.bus import connect, declare_streams


def message(n: int, **headers: str) -> Message:
    return Message(subjects.event(f"org-{n % 3}", "MemberInvited"), b'{"n": %d}' % n, {"Nats-Msg-Id": f"event-{n}", **headers})


async def stored(nc) -> list[bytes]:
    js = nc.jetstream()
    total = (await js.stream_info(subjects.STREAM)).state.messages
    return [(await js.get_msg(subjects.STREAM, seq)).data for seq in range(1, total + 1)]


@pytest.fixture
async def nc(clean_nats: str):
    await declare_streams(clean_nats)
    connection = await connect(clean_nats)
    yield connection
    await connection.close()


async def test_a_batch_returns_once_the_stream_holds_all_of_it_in_order_and_a_repeat_adds_nothing(nc):
    publisher = StreamPublisher(nc)
    batch = [message(n) for n in range(40)]
    assert await publisher.publish(batch, timeout=10) == 40  # the highest stream sequence acked
    assert await stored(nc) == [m.body for m in batch]  # no waiting: the acks said so
    # the same ids: acked as duplicates, with the first copies' sequences
    assert await publisher.publish(batch[:10], timeout=10) == 10
    assert await stored(nc) == [m.body for m in batch]
    assert publisher._waiting == {}


async def test_a_message_the_stream_refuses_fails_its_batch(nc):
    publisher = StreamPublisher(nc)
    batch = [message(1), message(2, **{"Nats-Expected-Stream": "NOT-" + subjects.STREAM}), message(3)]
    with pytest.raises(PublishRefused):
        await publisher.publish(batch, timeout=10)
    assert publisher._waiting == {}


async def test_a_subject_no_stream_holds_fails_its_batch(nc):
    publisher = StreamPublisher(nc)
    with pytest.raises(PublishRefused):
        await publisher.publish([Message("nowhere.at.all", b"{}", {"Nats-Msg-Id": "x"})], timeout=10)


async def test_a_batch_never_acked_times_out_and_is_forgotten(nc):
    publisher = StreamPublisher(nc)
    silent = await nc.subscribe("silent.subject")  # answers nobody: no ack, and no 'no responders' either
    with pytest.raises(TimeoutError):
        await publisher.publish([Message("silent.subject", b"{}", {"Nats-Msg-Id": "y"})], timeout=0.3)
    assert publisher._waiting == {}
    await silent.unsubscribe()


async def test_concurrent_batches_each_wait_for_their_own_acks(nc):
    publisher = StreamPublisher(nc)
    good = [message(n) for n in range(100, 130)]
    bad = [message(200), message(201, **{"Nats-Expected-Last-Sequence": "999999"})]
    results = await asyncio.gather(
        publisher.publish(good, timeout=10), publisher.publish(bad, timeout=10), return_exceptions=True
    )
    assert results[0] in (30, 31)  # the highest sequence of its own acks: 30 messages, maybe one of the other batch
    assert isinstance(results[1], PublishRefused)
    held = await stored(nc)
    assert [m.body for m in good] == [body for body in held if body in {m.body for m in good}]
    assert bad[1].body not in held
