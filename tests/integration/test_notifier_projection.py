"""The notifier's projection and sender in-process on a real PostgreSQL, with a clock the test sets
and a recording mailer: what the delivery log does without timing races."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import uuid
from datetime import UTC, datetime, timedelta

import aiosmtplib
import asyncpg
import msgspec
import pytest

from services.notifier.config import NotifierSettings
from services.notifier.handlers import carry_over
from services.notifier.projection import LIVE_SCHEMA, NotifierProjection
from services.notifier.sender import Sender
from shared.clock import FixedClock
from shared.consumer import apply_in_order, prepare
from shared.contract.events import Envelope
from shared.invitations import token_matches

UTC = UTC
T0 = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)
WEEK = timedelta(days=7)
SETTINGS = NotifierSettings(retry_base_seconds=1, retry_max_seconds=8, smtp_timeout_seconds=5, sending_timeout_seconds=30)
SECRET = "projection-test-secret"


class History:
    def __init__(self, org_id: str = "org_1", name: str = "Acme") -> None:
        self.org_id = org_id
        self.sequence = 0
        self.events: list[Envelope] = []
        self.event(
            "OrganizationCreated",
            T0,
            {
                "name": name,
                "plan": "pro",
                "owner_user_id": "owner",
                "owner_email": "owner@acme.io",
                "seats_included": 3,
                "unit_price_cents": 1000,
                "billing_anchor": T0,
            },
        )

    def event(self, event_type: str, at: datetime, data: dict, actor: dict | None = None) -> Envelope:
        self.sequence += 1
        envelope = msgspec.convert(
            {
                "event_id": f"evt_{uuid.uuid4().hex}",
                "event_type": event_type,
                "schema_version": 1,
                "org_id": self.org_id,
                "sequence": self.sequence,
                "occurred_at": at,
                "actor": actor or {"type": "user", "id": "owner"},
                "command_id": f"cmd-{self.sequence}",
                "correlation_id": None,
                "data": msgspec.to_builtins(data),
            },
            Envelope,
        )
        self.events.append(envelope)
        return envelope

    def invited(self, invitation_id: str, at: datetime = T0) -> Envelope:
        return self.event(
            "MemberInvited",
            at,
            {
                "invitation_id": invitation_id,
                "email": f"{invitation_id}@example.com",
                "role": "developer",
                "invited_by": {"type": "user", "id": "owner"},
                "expires_at": at + WEEK,
            },
        )

    def resent(self, invitation_id: str, at: datetime) -> Envelope:
        return self.event(
            "InvitationResent",
            at,
            {"invitation_id": invitation_id, "email": f"{invitation_id}@example.com", "expires_at": at + WEEK},
        )

    def revoked(self, invitation_id: str, at: datetime = T0) -> Envelope:
        return self.event("InvitationRevoked", at, {"invitation_id": invitation_id, "email": f"{invitation_id}@example.com"})

    def accepted(self, invitation_id: str, at: datetime = T0) -> Envelope:
        return self.event(
            "InvitationAccepted",
            at,
            {
                "invitation_id": invitation_id,
                "user_id": f"u_{invitation_id}",
                "email": f"{invitation_id}@example.com",
                "role": "developer",
            },
        )


def read_back(content: bytes):
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(content)


class RecordingMailer:
    def __init__(self, fail_with: BaseException | None = None, delay: float = 0.0) -> None:
        self.fail_with = fail_with
        self.delay = delay
        self.sent: list = []
        self.envelopes: list[tuple[str, str]] = []

    async def send(self, email) -> None:
        await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        self.envelopes.append((email.envelope_from, email.envelope_to))
        self.sent.append(read_back(email.content))

    async def close(self) -> None:
        pass


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    async with pool.acquire() as connection:
        await prepare(connection, NotifierProjection(LIVE_SCHEMA))
    yield pool
    await pool.close()


async def project(pool, events, schema: str = LIVE_SCHEMA) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await apply_in_order(connection, NotifierProjection(schema), events)


async def rows(pool, schema: str = LIVE_SCHEMA) -> dict[str, asyncpg.Record]:
    return {r["event_id"]: r for r in await pool.fetch(f'SELECT * FROM "{schema}".deliveries ORDER BY occurred_at, event_id')}


def sender(pool, clock, mailer) -> Sender:
    return Sender(
        pool, None, LIVE_SCHEMA, mailer, SETTINGS, clock, public_url="https://app.test", server_secret=SECRET, database_url=""
    )


async def test_one_delivery_per_event_id_even_when_the_projection_sees_an_event_twice(pool):
    history = History()
    invited = history.invited("inv_a")
    projection = NotifierProjection(LIVE_SCHEMA)
    async with pool.acquire() as connection, connection.transaction():
        await projection.apply(connection, [*history.events, invited])
    async with pool.acquire() as connection, connection.transaction():
        await projection.apply(connection, [invited])
    deliveries = await rows(pool)
    assert list(deliveries) == [invited.event_id]
    row = deliveries[invited.event_id]
    assert (row["recipient"], row["org_name"], row["inviter"], row["status"], row["attempts"]) == (
        "inv_a@example.com",
        "Acme",
        "owner@acme.io",
        "pending",
        0,
    )
    assert row["expires_at"] == T0 + WEEK
    columns = {
        r["column_name"]
        for r in await pool.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1", LIVE_SCHEMA)
    }
    assert not any("token" in column for column in columns)


async def test_revocation_acceptance_and_resend_skip_pending_deliveries_but_not_one_being_sent(pool):
    history = History()
    a, b, c = history.invited("inv_a"), history.invited("inv_b"), history.invited("inv_c")
    await project(pool, history.events)
    await pool.execute(f"UPDATE {LIVE_SCHEMA}.deliveries SET status = 'sending' WHERE event_id = $1", c.event_id)
    history.revoked("inv_a")
    history.accepted("inv_b")
    again = history.resent("inv_c", T0 + timedelta(days=1))
    await project(pool, history.events)

    deliveries = await rows(pool)
    assert (deliveries[a.event_id]["status"], deliveries[a.event_id]["reason"]) == ("skipped", "invitation revoked")
    assert (deliveries[b.event_id]["status"], deliveries[b.event_id]["reason"]) == ("skipped", "invitation accepted")
    assert deliveries[c.event_id]["status"] == "sending"  # already on its way: it finishes
    assert deliveries[again.event_id]["status"] == "pending"
    assert deliveries[again.event_id]["expires_at"] == T0 + timedelta(days=1) + WEEK


async def test_the_sender_checks_the_invitation_when_it_sends_by_the_clock(pool):
    history = History()
    stale, fresh = history.invited("inv_old", T0), history.invited("inv_new", T0 + timedelta(days=5))
    await project(pool, history.events)
    clock = FixedClock(T0 + WEEK + timedelta(seconds=1))  # the first expired a second ago
    mailer = RecordingMailer()
    assert await sender(pool, clock, mailer).send_next()
    assert await sender(pool, clock, mailer).send_next()
    assert not await sender(pool, clock, mailer).send_next()

    deliveries = await rows(pool)
    assert (deliveries[stale.event_id]["status"], deliveries[stale.event_id]["reason"]) == ("skipped", "invitation expired")
    assert deliveries[fresh.event_id]["status"] == "sent" and deliveries[fresh.event_id]["attempts"] == 1
    [message] = mailer.sent
    assert message["To"] == "inv_new@example.com"
    assert message["Message-ID"] == f"<{fresh.event_id}@team-members.notifier>"
    token = message.get_body(("plain",)).get_content().split("token=")[1].split()[0]
    assert token_matches(SECRET, token, "inv_new", T0 + timedelta(days=5) + WEEK)


async def test_a_resend_supersedes_an_email_still_waiting_for_a_retry(pool):
    history = History()
    first = history.invited("inv_a")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    assert await sender(pool, clock, RecordingMailer(fail_with=aiosmtplib.SMTPConnectError("refused"))).send_next()
    again = history.resent("inv_a", T0 + timedelta(minutes=2))
    await project(pool, history.events)
    clock.advance(minutes=5)
    mailer = RecordingMailer()
    while await sender(pool, clock, mailer).send_next():
        pass
    deliveries = await rows(pool)
    assert (deliveries[first.event_id]["status"], deliveries[first.event_id]["reason"]) == (
        "skipped",
        "superseded by a later resend",
    )
    assert deliveries[again.event_id]["status"] == "sent"
    assert [m["Message-ID"] for m in mailer.sent] == [f"<{again.event_id}@team-members.notifier>"]


async def test_temporary_failures_back_off_exponentially_up_to_the_cap(pool):
    history = History()
    invited = history.invited("inv_a")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    down = sender(pool, clock, RecordingMailer(fail_with=aiosmtplib.SMTPResponseException(421, "busy")))
    waits = []
    for _ in range(6):
        assert await down.send_next()
        row = (await rows(pool))[invited.event_id]
        assert row["status"] == "pending" and row["last_error"] == "421 busy"
        waits.append((row["next_attempt_at"] - clock.now()).total_seconds())
        assert not await down.send_next()  # not due before its time
        clock.set(row["next_attempt_at"])
    assert waits == [1, 2, 4, 8, 8, 8]
    mailer = RecordingMailer()
    assert await sender(pool, clock, mailer).send_next()
    row = (await rows(pool))[invited.event_id]
    assert (row["status"], row["attempts"], row["last_error"], len(mailer.sent)) == ("sent", 7, None, 1)


async def test_a_delivery_left_in_sending_by_a_crash_is_sent_again_after_the_timeout(pool):
    history = History()
    invited = history.invited("inv_a")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    await pool.execute(
        f"UPDATE {LIVE_SCHEMA}.deliveries SET status = 'sending', attempts = 1, claimed_at = $2 WHERE event_id = $1",
        invited.event_id,
        clock.now(),
    )
    mailer = RecordingMailer()
    clock.advance(seconds=SETTINGS.sending_timeout_seconds - 1)
    assert not await sender(pool, clock, mailer).send_next()  # maybe still being sent by someone
    clock.advance(seconds=2)
    assert await sender(pool, clock, mailer).send_next()
    row = (await rows(pool))[invited.event_id]
    assert (row["status"], row["attempts"], len(mailer.sent)) == ("sent", 2, 1)


async def test_concurrent_senders_never_take_the_same_delivery(pool):
    history = History()
    for n in range(12):
        history.invited(f"inv_{n}")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    mailers = [RecordingMailer(delay=0.02) for _ in range(3)]

    async def drain(mailer):
        while await sender(pool, clock, mailer).send_next():
            pass

    await asyncio.gather(*(drain(m) for m in mailers))
    recipients = [m["To"] for mailer in mailers for m in mailer.sent]
    assert sorted(recipients) == sorted(f"inv_{n}@example.com" for n in range(12))
    assert all(len(mailer.sent) > 0 for mailer in mailers), "the senders did not overlap"


async def test_a_rebuild_keeps_the_live_sending_state_so_nothing_is_sent_again(pool):
    history = History()
    sent, failed, waiting, revoked_later = (history.invited(f"inv_{n}") for n in ("sent", "failed", "waiting", "revoked"))
    await project(pool, history.events)
    await pool.execute(
        f"UPDATE {LIVE_SCHEMA}.deliveries SET status = 'sent', attempts = 2, sent_at = $2 WHERE event_id = $1", sent.event_id, T0
    )
    await pool.execute(
        f"UPDATE {LIVE_SCHEMA}.deliveries SET status = 'failed', attempts = 1, last_error = '550 no' WHERE event_id = $1",
        failed.event_id,
    )
    await pool.execute(
        f"UPDATE {LIVE_SCHEMA}.deliveries SET attempts = 3, last_error = '421 busy', next_attempt_at = $2 WHERE event_id = $1",
        waiting.event_id,
        T0 + timedelta(hours=1),
    )
    history.revoked("inv_revoked")  # on the stream, replayed by the rebuild, not yet applied live

    shadow = NotifierProjection("notifier_rebuild")
    async with pool.acquire() as connection:
        await prepare(connection, shadow)
    await project(pool, history.events, shadow.schema)
    async with pool.acquire() as connection, connection.transaction():
        await carry_over(connection, shadow)

    live, rebuilt = await rows(pool), await rows(pool, shadow.schema)
    columns = ("status", "attempts", "last_error", "sent_at", "next_attempt_at")
    for event in (sent, failed, waiting):
        assert [rebuilt[event.event_id][c] for c in columns] == [live[event.event_id][c] for c in columns]
    assert rebuilt[revoked_later.event_id]["status"] == "skipped"


class CrashingMailer(RecordingMailer):
    """Takes `survives` messages, then the process dies (as far as the sender can tell) mid-send."""

    def __init__(self, survives: int) -> None:
        super().__init__()
        self.survives = survives

    async def send(self, email) -> None:
        if len(self.sent) == self.survives:
            raise KeyboardInterrupt("killed mid-batch")
        await super().send(email)


@pytest.mark.parametrize("survives", [0, 1, 3, 5])
async def test_a_sender_killed_mid_batch_leaves_the_rest_to_be_sent_once_after_the_timeout(pool, survives):
    history = History()
    for n in range(6):
        history.invited(f"inv_{n}")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    crashing = CrashingMailer(survives)
    with pytest.raises(KeyboardInterrupt):
        await sender(pool, clock, crashing).send_next(limit=6)
    statuses = [row["status"] for row in (await rows(pool)).values()]
    assert statuses == ["sent"] * survives + ["sending"] * (6 - survives)

    mailer = RecordingMailer()
    assert not await sender(pool, clock, mailer).send_next(limit=6)  # claimed: maybe still on their way
    clock.advance(seconds=SETTINGS.sending_timeout_seconds + 1)
    while await sender(pool, clock, mailer).send_next(limit=4):
        pass
    deliveries = (await rows(pool)).values()
    assert [m["To"] for m in crashing.sent + mailer.sent] == [row["recipient"] for row in deliveries]  # each once, in order
    assert all(row["status"] == "sent" for row in deliveries)


async def test_a_temporary_failure_puts_the_rest_of_the_batch_back_untried(pool):
    history = History()
    first, second, third = (history.invited(f"inv_{n}", T0 + timedelta(seconds=n)) for n in range(3))
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    down = RecordingMailer(fail_with=aiosmtplib.SMTPResponseException(421, "busy"))
    assert await sender(pool, clock, down).send_next(limit=3)
    deliveries = await rows(pool)
    assert (deliveries[first.event_id]["status"], deliveries[first.event_id]["attempts"]) == ("pending", 1)
    assert deliveries[first.event_id]["next_attempt_at"] > clock.now()
    for later in (second, third):
        row = deliveries[later.event_id]
        assert (row["status"], row["attempts"], row["last_error"], row["claimed_at"]) == ("pending", 0, None, None)
    mailer = RecordingMailer()
    assert await sender(pool, clock, mailer).send_next(limit=3)
    assert [m["To"] for m in mailer.sent] == ["inv_1@example.com", "inv_2@example.com"]


async def test_a_batch_skips_what_must_not_go_out_and_sends_the_rest(pool):
    history = History()
    kept, revoked, later = (history.invited(f"inv_{x}", T0 + timedelta(seconds=n)) for n, x in enumerate("abc"))
    await project(pool, history.events)
    await pool.execute(f"UPDATE {LIVE_SCHEMA}.invitations SET status = 'revoked' WHERE invitation_id = 'inv_b'")
    mailer = RecordingMailer()
    assert await sender(pool, FixedClock(T0 + timedelta(minutes=1)), mailer).send_next(limit=10)
    deliveries = await rows(pool)
    assert [deliveries[e.event_id]["status"] for e in (kept, revoked, later)] == ["sent", "skipped", "sent"]
    assert [m["To"] for m in mailer.sent] == ["inv_a@example.com", "inv_c@example.com"]


async def test_concurrent_batching_senders_send_each_delivery_once(pool):
    history = History()
    for n in range(30):
        history.invited(f"inv_{n}")
    await project(pool, history.events)
    clock = FixedClock(T0 + timedelta(minutes=1))
    mailers = [RecordingMailer(delay=0.005) for _ in range(3)]

    async def drain(mailer):
        while await sender(pool, clock, mailer).send_next(limit=4):
            pass

    await asyncio.gather(*(drain(m) for m in mailers))
    recipients = [m["To"] for mailer in mailers for m in mailer.sent]
    assert sorted(recipients) == sorted(f"inv_{n}@example.com" for n in range(30))
