"""A batch of claimed deliveries (`NOTIFIER_SEND_BATCH`) on a real PostgreSQL: each row is checked
against its invitation just before its email goes out, and a sender settles or puts back only the
rows it still holds (its claim's `claimed_at`), never one another sender has taken over.

The first three are the hostile review's reproductions of the batched sender (all three failed
on it); the fixtures are `test_notifier_projection.py`'s."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import aiosmtplib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.notifier.deliveries import SUPERSEDED, closed_reason
from services.notifier.projection import LIVE_SCHEMA
from tests.integration import test_notifier_projection
from tests.integration.test_notifier_projection import SETTINGS, T0, FixedClock, History, RecordingMailer, project, rows, sender

pool = test_notifier_projection.pool  # the fixture: a pool on a database with the notifier's tables


class ProjectingMailer(RecordingMailer):
    """While the `n`-th email (0-based) is on its way, the projection applies `during[n]`, exactly
    as the live consumer would."""

    def __init__(self, pool, during: dict[int, list]) -> None:
        super().__init__()
        self.pool = pool
        self.during = during
        self.calls = 0

    async def send(self, email) -> None:
        events = self.during.get(self.calls, [])
        self.calls += 1
        if events:
            await project(self.pool, events)
        await super().send(email)


def closing(history: History, how: str, invitation_id: str, at):
    return {"revoked": history.revoked, "accepted": history.accepted, "resent": history.resent}[how](invitation_id, at)


REASONS = {"revoked": closed_reason("revoked"), "accepted": closed_reason("accepted"), "resent": SUPERSEDED}


@pytest.mark.parametrize("how", ["revoked", "accepted", "resent"])
async def test_an_invitation_closed_while_an_earlier_email_of_its_batch_is_sent_gets_no_email(pool, how):
    """The hostile review's first: the invitation was checked only at the claim, so a revocation
    landing while an earlier email of the same batch went out did not stop this one."""
    history = History()
    first, second = history.invited("inv_a", T0), history.invited("inv_b", T0 + timedelta(seconds=1))
    await project(pool, history.events)
    mailer = ProjectingMailer(pool, {0: [closing(history, how, "inv_b", T0 + timedelta(seconds=30))]})
    assert await sender(pool, FixedClock(T0 + timedelta(minutes=1)), mailer).send_next(limit=2)
    assert [m["To"] for m in mailer.sent] == ["inv_a@example.com"], "the closed invitation's email went out"
    deliveries = await rows(pool)
    assert deliveries[first.event_id]["status"] == "sent"
    skipped = deliveries[second.event_id]
    assert (skipped["status"], skipped["reason"], skipped["attempts"], skipped["claimed_at"]) == (
        "skipped",
        REASONS[how],
        0,
        None,
    )


class GatedMailer(RecordingMailer):
    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, email) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().send(email)


async def test_a_sender_past_its_deadline_never_releases_rows_another_sender_has_claimed(pool):
    """The hostile review's second: `release` put back `sending` rows without checking they were
    still this sender's claim: a sender whose batch outlived `sending_timeout_seconds` handed another
    sender's fresh claim back to `pending`, a third claim took those rows while the second sender was
    still sending them, and each went out twice."""
    history = History()
    for n in range(3):
        history.invited(f"inv_{n}", T0 + timedelta(seconds=n))
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    b_mailer = GatedMailer()
    b_task: list[asyncio.Task] = []

    class StallingMailer(RecordingMailer):
        async def send(self, email) -> None:
            # sender A stalls past the sending timeout on its first email; B takes over the stale claims
            clock.advance(seconds=SETTINGS.sending_timeout_seconds + 1)
            b_task.append(asyncio.create_task(sender(pool, clock, b_mailer).send_next(limit=3)))
            await b_mailer.entered.wait()  # B has claimed and is sending its first
            await super().send(email)

    a_mailer = StallingMailer()
    await sender(pool, clock, a_mailer).send_next(limit=3)  # A: sends inv_0, then would release inv_1, inv_2
    c_mailer = RecordingMailer()
    await sender(pool, clock, c_mailer).send_next(limit=3)  # C: takes whatever is pending now
    b_mailer.gate.set()
    await b_task[0]
    sent = [m["To"] for mailer in (a_mailer, b_mailer, c_mailer) for m in mailer.sent]
    # inv_0 doubling is the stale takeover the design accepts; inv_1 and inv_2 were never at risk before
    assert sent.count("inv_1@example.com") == 1, sent
    assert sent.count("inv_2@example.com") == 1, sent
    assert all(row["status"] == "sent" for row in (await rows(pool)).values())


async def test_a_batch_past_its_deadline_puts_back_every_row_it_did_not_try(pool):
    """The hostile review's third: when the deadline stopped a batch at row p, `to_send[p + 1:]` went
    back: row p itself, never tried, stayed `sending` with an attempt it never made, and waited out
    the whole sending timeout before anyone sent it."""
    history = History()
    for n in range(3):
        history.invited(f"inv_{n}", T0 + timedelta(seconds=n))
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))

    class SlowMailer(RecordingMailer):
        async def send(self, email) -> None:
            clock.advance(seconds=SETTINGS.sending_timeout_seconds - SETTINGS.smtp_timeout_seconds)  # a slow first send
            await super().send(email)

    await sender(pool, clock, SlowMailer()).send_next(limit=3)
    deliveries = list((await rows(pool)).values())
    assert [(d["recipient"], d["status"], d["attempts"], d["claimed_at"]) for d in deliveries] == [
        ("inv_0@example.com", "sent", 1, T0 + timedelta(minutes=1)),
        ("inv_1@example.com", "pending", 0, None),
        ("inv_2@example.com", "pending", 0, None),
    ]


@pytest.mark.parametrize(
    "failure", [aiosmtplib.SMTPResponseException(421, "busy"), aiosmtplib.SMTPRecipientRefused(550, "no such user", "x")]
)
async def test_a_sender_past_its_deadline_never_settles_a_row_another_sender_has_claimed(pool, failure):
    """The same gap in the settlements: a stale sender whose email then fails must not put back
    (temporary) or fail (permanent) the row another sender has taken over and is sending."""
    history = History()
    only = history.invited("inv_0")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    b_mailer = GatedMailer()
    b_task: list[asyncio.Task] = []

    class StallingFailingMailer(RecordingMailer):
        async def send(self, email) -> None:
            clock.advance(seconds=SETTINGS.sending_timeout_seconds + 1)
            b_task.append(asyncio.create_task(sender(pool, clock, b_mailer).send_next()))
            await b_mailer.entered.wait()
            raise failure

    await sender(pool, clock, StallingFailingMailer()).send_next()
    row = (await rows(pool))[only.event_id]
    assert (row["status"], row["attempts"], row["last_error"]) == ("sending", 2, None), "A settled B's claim"
    c_mailer = RecordingMailer()
    assert not await sender(pool, clock, c_mailer).send_next()  # nothing due: B holds it
    b_mailer.gate.set()
    await b_task[0]
    assert [m["To"] for m in b_mailer.sent + c_mailer.sent] == ["inv_0@example.com"]
    assert (await rows(pool))[only.event_id]["status"] == "sent"


CLOSINGS = st.sampled_from([None, "revoked", "accepted", "resent"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(CLOSINGS, st.integers(min_value=0, max_value=5)), min_size=1, max_size=6))
async def test_every_email_of_a_batch_goes_out_exactly_when_its_invitation_is_open_just_before_it(pool, plan):
    """Invitation i of a batch may be closed (revoked, accepted, resent) while the `when`-th email of
    the batch is on its way: its own email goes out if and only if that had not happened yet when
    its turn came; the others are skipped with the reason, their attempt given back."""
    await pool.execute(f"TRUNCATE {LIVE_SCHEMA}.deliveries, {LIVE_SCHEMA}.invitations")
    history = History(org_id=f"org_{uuid.uuid4().hex}")
    invited = [history.invited(f"inv_{i}", T0 + timedelta(seconds=i)) for i in range(len(plan))]
    await project(pool, history.events)
    during: dict[int, list] = {}  # made in the order they are applied: the projection wants each org's next sequence
    for k, (when, i, how) in enumerate(sorted((when, i, how) for i, (how, when) in enumerate(plan) if how is not None)):
        during.setdefault(when, []).append((i, closing(history, how, f"inv_{i}", T0 + timedelta(seconds=30 + k))))

    # the model: row i is checked after the emails before it have gone out, with what they let in
    expected: dict[int, tuple[str, str | None]] = {}
    closed: set[int] = set()
    sends = 0
    for i in range(len(plan)):
        if i in closed:
            expected[i] = ("skipped", REASONS[plan[i][0]])
            continue
        expected[i] = ("sent", None)
        closed |= {j for j, _ in during.get(sends, [])}
        sends += 1

    mailer = ProjectingMailer(pool, {n: [event for _, event in pairs] for n, pairs in during.items()})
    assert await sender(pool, FixedClock(T0 + timedelta(minutes=1)), mailer).send_next(limit=len(plan))
    deliveries = await rows(pool)
    assert {i: (deliveries[e.event_id]["status"], deliveries[e.event_id]["reason"]) for i, e in enumerate(invited)} == expected
    assert [m["To"] for m in mailer.sent] == [f"inv_{i}@example.com" for i, (status, _) in expected.items() if status == "sent"]
    assert all(deliveries[e.event_id]["attempts"] == (1 if expected[i][0] == "sent" else 0) for i, e in enumerate(invited))
