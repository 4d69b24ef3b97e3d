"""The sender's loop on a real PostgreSQL: batch after batch on one pooled connection until nothing is
due, and the failed deliveries looked for at the start, right after a refusal of its own, and at most a
poll apart otherwise (not after every batch). The fixtures are `test_notifier_projection.py`'s."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import aiosmtplib
import pytest

from services.notifier.projection import LIVE_SCHEMA
from services.notifier.sender import Sender
from tests.integration import test_notifier_projection
from tests.integration.test_notifier_projection import SECRET, SETTINGS, T0, FixedClock, History, RecordingMailer, project, rows

pool = test_notifier_projection.pool  # the fixture: a pool on a database with the notifier's tables

REFUSED = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "x@example.com")])


class RefusingFirst(RecordingMailer):
    """Refuses the first email for good (a 550 to RCPT), takes the others."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def send(self, email) -> None:
        self.calls += 1
        if self.calls == 1:
            raise REFUSED
        await super().send(email)


def batched_sender(pool, mailer, batch: int, poll_seconds: float = 60.0) -> Sender:
    settings = dataclasses.replace(SETTINGS, send_batch=batch, poll_seconds=poll_seconds)
    clock = FixedClock(T0 + timedelta(minutes=1))
    return Sender(
        pool, None, LIVE_SCHEMA, mailer, settings, clock, public_url="https://app.test", server_secret=SECRET, database_url=""
    )


async def invite(pool, count: int) -> list[str]:
    history = History()
    invited = [history.invited(f"inv_{n}", T0 + timedelta(seconds=n)) for n in range(count)]
    await project(pool, history.events)
    return [event.event_id for event in invited]


@pytest.mark.parametrize("count", [0, 1, 5, 6, 7])
async def test_batch_after_batch_every_due_email_goes_out_once(pool, count):
    event_ids = await invite(pool, count)
    mailer = RecordingMailer()
    sender = batched_sender(pool, mailer, batch=3)
    await sender.publish_dead_letters()  # the start's look: none failed
    assert not await sender._send_while_due(asyncio.Event()), "it stopped before nothing was due"
    assert sorted(m["To"] for m in mailer.sent) == sorted(f"inv_{n}@example.com" for n in range(count))
    deliveries = await rows(pool)
    assert [deliveries[event_id]["status"] for event_id in event_ids] == ["sent"] * count


async def test_a_stop_ends_the_batches(pool):
    await invite(pool, 4)
    stop = asyncio.Event()
    stop.set()
    mailer = RecordingMailer()
    assert not await batched_sender(pool, mailer, batch=2)._send_while_due(stop)
    assert mailer.sent == []


async def test_failed_deliveries_are_looked_for_at_the_start(pool):
    sender = batched_sender(pool, RecordingMailer(), batch=2)
    assert sender._dead_letters_due(), "a failed row a previous run left would wait for a poll"
    await sender.publish_dead_letters()
    assert not sender._dead_letters_due(), "looked for after every batch again"


async def test_a_refusal_stops_the_batches_for_its_dead_letter_then_they_go_on(pool):
    event_ids = await invite(pool, 5)
    mailer = RefusingFirst()
    sender = batched_sender(pool, mailer, batch=2)
    await sender.publish_dead_letters()
    assert await sender._send_while_due(asyncio.Event()), "the refusal's dead letter waited for the whole queue"
    assert sender._dead_letters_due()
    deliveries = await rows(pool)
    assert [deliveries[event_id]["status"] for event_id in event_ids] == ["failed", "sent", "pending", "pending", "pending"]
    # publishing it needs the stream; here the look is only marked done, and the batches go on
    sender._refused_since_look = False
    assert not await sender._send_while_due(asyncio.Event())
    deliveries = await rows(pool)
    assert [deliveries[event_id]["status"] for event_id in event_ids] == ["failed", "sent", "sent", "sent", "sent"]


async def test_failed_deliveries_are_looked_for_again_after_a_poll(pool):
    sender = batched_sender(pool, RecordingMailer(), batch=2, poll_seconds=0.05)
    await sender.publish_dead_letters()
    assert not sender._dead_letters_due()
    await asyncio.sleep(0.1)
    assert sender._dead_letters_due(), "a failed row another instance left would never be dead-lettered under load"
