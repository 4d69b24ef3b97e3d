"""A server's refusal whose text holds a NUL or bytes that are not UTF-8.

The reply reader (`smtp_replies.py`) decodes a reply's text with `surrogateescape`, and
`deliveries.describe` keeps it as `last_error`. PostgreSQL refuses both a NUL and a lone surrogate:
unless `describe` cleans them, the settlement itself fails, the delivery stays `sending` (and the
rest of the claimed batch with it) until `sending_timeout_seconds`, and is then claimed and sent again,
over and over (found by the review of issue 11's fourth round)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration import test_notifier_projection
from tests.integration.test_notifier_projection import T0, FixedClock, History, project, rows, sender
from tests.integration.test_notifier_smtp_session import Script, scripted  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

pool = test_notifier_projection.pool


@pytest.mark.parametrize(
    "refusal",
    [b"550 5.1.1 no such user \x00 here\r\n", b"550 5.1.1 no such user \xff\xfe here\r\n"],
    ids=["nul", "not-utf8"],
)
async def test_a_refusal_with_odd_bytes_is_recorded_and_the_batch_goes_on(pool, scripted, refusal):  # noqa: F811
    history = History()
    bad, good = history.invited("inv_bad", T0), history.invited("inv_good", T0 + timedelta(seconds=1))
    await project(pool, history.events)
    mailer, _ = await scripted(Script(replies={"RCPT": [refusal]}))
    await sender(pool, FixedClock(T0 + timedelta(minutes=1)), mailer).send_next(limit=2)
    stored = await rows(pool)
    assert stored[bad.event_id]["status"] == "failed"  # a 550 to RCPT is permanent
    assert stored[good.event_id]["status"] == "sent"


@pytest.mark.parametrize(
    "answer",
    [b"451 4.3.0 try later \x00\r\n", b"451 4.3.0 try later \xc3\x28\r\n"],
    ids=["nul", "not-utf8"],
)
async def test_a_temporary_refusal_with_odd_bytes_is_retried_later(pool, scripted, answer):  # noqa: F811
    history = History()
    invited = history.invited("inv_later", T0)
    await project(pool, history.events)
    mailer, _ = await scripted(Script(replies={"RCPT": [answer]}))
    await sender(pool, FixedClock(T0 + timedelta(minutes=1)), mailer).send_next(limit=1)
    stored = (await rows(pool))[invited.event_id]
    assert stored["status"] == "pending"  # a 4xx is temporary: back in the queue, with its error kept
    assert stored["last_error"].startswith("451 4.3.0 try later")
