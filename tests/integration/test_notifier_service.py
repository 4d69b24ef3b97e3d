"""The notifier as a process, fed by membership through the stream, mailing real SMTP servers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from devstack import SmtpSink, free_port
from shared import subjects
from teamctl.client import Client
from tests.servers import smtp_sink_in_scratch_dir
from tests.services_under_test import ServiceUnderTest
from tests.waiting import eventually

PUBLIC_URL = "https://members.test"
OWNER = {"type": "user", "id": "owner-1"}
OWNER_EMAIL = "owner@acme.io"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/invitations/([A-Za-z0-9_%-]+)/accept\?token=([A-Za-z0-9_%-]+)")
FAST_RETRIES = {
    "PUBLIC_URL": PUBLIC_URL,
    "SMTP_RETRY_BASE_SECONDS": "0.2",
    "SMTP_RETRY_MAX_SECONDS": "0.4",
    "NOTIFIER_POLL_SECONDS": "0.2",
    "SMTP_TIMEOUT_SECONDS": "3",
    "NOTIFIER_SENDING_TIMEOUT_SECONDS": "4",
}


# -- helpers ---------------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def body(message: EmailMessage, content_type: str) -> str:
    parts = [p for p in message.walk() if p.get_content_type() == content_type]
    assert len(parts) == 1, f"one {content_type} part expected"
    return parts[0].get_content()


def accept_token(message: EmailMessage) -> tuple[str, str]:
    found = LINK.search(body(message, "text/plain"))
    assert found, body(message, "text/plain")
    return unquote(found.group(1)), unquote(found.group(2))


class Inbox:
    """The messages an SMTP server received, by recipient."""

    def __init__(self, read) -> None:
        self._read = read

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in map(parse, self._read()) if m["To"] == address]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 15.0) -> list[EmailMessage]:
        async def probe():
            return len(self.to(address)) >= count

        await eventually(probe, timeout)
        return self.to(address)


def sink_inbox(sink: SmtpSink) -> Inbox:
    return Inbox(lambda: [path.read_bytes() for path in sink.messages()])


class Recorder:
    """An in-process aiosmtpd handler: keeps each message; refuses some recipients; can be slow."""

    def __init__(self, refuse: set[str] = frozenset(), delay: float = 0.0) -> None:
        self.refuse = set(refuse)
        self.delay = delay
        self.received: list[bytes] = []
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.received.append(envelope.original_content or envelope.content)
        return "250 Message accepted"

    def messages(self) -> list[bytes]:
        with self._lock:
            return list(self.received)


@contextmanager
def smtp_server_in_process(handler: Recorder) -> Iterator[str]:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{controller.port}"
    finally:
        controller.stop()


@contextmanager
def running_notifier(service_env: dict[str, str], log_dir: Path, smtp_url: str, **extra: str) -> Iterator[ServiceUnderTest]:
    notifier = ServiceUnderTest("notifier", {**service_env, **FAST_RETRIES, "SMTP_URL": smtp_url, **extra}, log_dir)
    try:
        yield notifier.start()
    finally:
        notifier.stop()
    assert notifier.popen.returncode == 0, notifier.output()  # SIGTERM: a clean, prompt stop
    assert service_env["SERVER_SECRET"] not in notifier.output()


async def new_org(client: Client, name: str = "Acme", seats: int = 0) -> str:
    reply = await client.command(
        "create_organization", name=name, plan="pro", owner={"user_id": OWNER["id"], "email": OWNER_EMAIL}
    )
    assert reply["ok"], reply
    org_id = reply["result"]["org_id"]
    if seats:
        added = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=seats, accept_charge_cents=10**7)
        assert added["ok"], added
    return org_id


def unique_email(label: str) -> str:
    return f"{label}.{uuid.uuid4().hex[:8]}@example.com"


async def invite(client: Client, org_id: str, address: str) -> dict:
    reply = await client.command("invite_member", org_id=org_id, actor=OWNER, email=address, role="developer")
    assert reply["ok"], reply
    return reply


async def deliveries(client: Client, org_id: str) -> list[dict]:
    reply = await client.query("notifier", "deliveries", org_id=org_id)
    return reply["result"]["deliveries"] if reply["ok"] else []


async def delivery_where(client: Client, org_id: str, predicate, timeout: float = 15.0) -> dict | None:
    async def probe():
        return next((d for d in await deliveries(client, org_id) if predicate(d)), None)

    return await eventually(probe, timeout)


# -- fixtures --------------------------------------------------------------


@pytest.fixture
def notifier(service_env, tmp_path, membership, smtp_sink) -> Iterator[ServiceUnderTest]:
    with running_notifier(service_env, tmp_path, smtp_sink.url) as service:
        yield service


@pytest.fixture
def inbox(smtp_sink) -> Inbox:
    return sink_inbox(smtp_sink)


@pytest.fixture
def own_sink() -> Iterator[SmtpSink]:
    """A sink this test may stop and start again on the same port and directory."""
    with smtp_sink_in_scratch_dir() as sink:
        yield sink


# -- tests -----------------------------------------------------------------


async def test_one_email_per_invitation_with_org_inviter_link_expiry_and_message_id(notifier, inbox, nc):
    client = Client(nc)
    org_id = await new_org(client, "Acme Rockets")
    address = unique_email("first")
    invited = await invite(client, org_id, address)

    [message] = await inbox.wait_for(address)
    assert message["To"] == address
    assert "Acme Rockets" in message["Subject"] and OWNER_EMAIL in message["Subject"]
    assert message["Message-ID"] == f"<{invited['events'][-1]}@team-members.notifier>"
    text, html = body(message, "text/plain"), body(message, "text/html")
    invitation_id, token = accept_token(message)
    assert invitation_id == invited["result"]["invitation_id"]
    assert f"{PUBLIC_URL}/invitations/{invitation_id}/accept?token=" in html
    assert token in html
    expires = invited["result"]["expires_at"][:10]  # e.g. 2024-03-17
    day = str(int(expires[8:10]))
    assert re.search(rf"\b0?{day} \w+ {expires[:4]}", text), text

    delivery = await delivery_where(client, org_id, lambda d: d["status"] == "sent")
    assert delivery is not None and delivery["event_id"] == invited["events"][-1]
    assert (delivery["to"], delivery["attempts"], delivery["invitation_id"]) == (address, 1, invitation_id)
    marker = unique_email("marker")
    await invite(client, org_id, marker)
    await inbox.wait_for(marker)  # mailed after anything more the first invitation could have caused
    assert len(inbox.to(address)) == 1
    # the token is recomputed at send time: in no log line, in no table
    assert token not in notifier.output()
    connection = await asyncpg.connect(notifier.env["DATABASE_URL"])
    try:
        for table in ("deliveries", "invitations", "organizations", "people"):
            assert token not in repr(await connection.fetch(f"SELECT * FROM notifier.{table}"))
    finally:
        await connection.close()


async def test_the_same_event_delivered_again_sends_nothing_more(notifier, inbox, nc):
    client = Client(nc)
    org_id = await new_org(client)
    address = unique_email("dup")
    invited = await invite(client, org_id, address)
    await inbox.wait_for(address)

    js = nc.jetstream()
    original = await js.get_last_msg(subjects.STREAM, subjects.event(org_id, "MemberInvited"))
    republished = await js.publish(original.subject, original.data, headers={"Nats-Msg-Id": f"again-{uuid.uuid4().hex}"})
    assert not republished.duplicate  # the stream carries it a second time
    marker = unique_email("marker")
    await invite(client, org_id, marker)  # after the copy on the stream, so handled after it
    await inbox.wait_for(marker)

    assert len(inbox.to(address)) == 1
    assert [d["event_id"] for d in await deliveries(client, org_id)].count(invited["events"][-1]) == 1


async def test_smtp_down_for_a_while_then_back_delivers_exactly_once(service_env, tmp_path, membership, own_sink, nc):
    client = Client(nc)
    inbox = sink_inbox(own_sink)
    with running_notifier(service_env, tmp_path, own_sink.url):
        org_id = await new_org(client)
        own_sink.stop()
        address = unique_email("patient")
        await invite(client, org_id, address)
        retried = await delivery_where(client, org_id, lambda d: d["attempts"] >= 3 and d["status"] == "pending")
        assert retried is not None and retried["last_error"], await deliveries(client, org_id)
        assert inbox.to(address) == []

        own_sink.start()
        await inbox.wait_for(address)
        sent = await delivery_where(client, org_id, lambda d: d["status"] == "sent")
        assert sent is not None and sent["attempts"] >= 4
        marker = unique_email("marker")
        await invite(client, org_id, marker)
        await inbox.wait_for(marker)
        assert len(inbox.to(address)) == 1


async def test_notifier_killed_mid_batch_leaves_no_invitation_without_its_email(service_env, tmp_path, membership, nc):
    client = Client(nc)
    org_id = await new_org(client, seats=12)
    slow = Recorder(delay=0.15)
    inbox = Inbox(slow.messages)
    addresses = [unique_email(f"batch{n}") for n in range(12)]
    with smtp_server_in_process(slow) as smtp_url:
        notifier = ServiceUnderTest("notifier", {**service_env, **FAST_RETRIES, "SMTP_URL": smtp_url}, tmp_path)
        try:
            notifier.start()
            await asyncio.gather(*(invite(client, org_id, address) for address in addresses))

            async def some_sent():
                return len(slow.messages()) >= 3

            assert await eventually(some_sent, interval=0.02)
            notifier.kill()
            at_kill = len(slow.messages())
            assert at_kill < len(addresses), "the batch finished before the kill; nothing was interrupted"
            notifier.start()

            async def all_mailed():
                return all(inbox.to(address) for address in addresses)

            assert await eventually(all_mailed, timeout=30), [a for a in addresses if not inbox.to(a)]

            async def all_sent():
                return (
                    all(d["status"] == "sent" for d in await deliveries(client, org_id))
                    and len(await deliveries(client, org_id)) == 12
                )

            assert await eventually(all_sent)
        finally:
            notifier.stop()


async def test_a_hostile_org_name_is_escaped_in_the_html_part(notifier, inbox, nc):
    client = Client(nc)
    hostile = "<script>alert(1)</script> & Co"
    org_id = await new_org(client, hostile)
    address = unique_email("xss")
    await invite(client, org_id, address)

    [message] = await inbox.wait_for(address)
    html = body(message, "text/html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html
    assert hostile in body(message, "text/plain")
    assert hostile in message["Subject"]


async def test_the_token_is_accepted_and_an_older_one_is_refused_after_a_resend(notifier, inbox, nc):
    client = Client(nc)
    org_id = await new_org(client)

    first_address = unique_email("joiner")
    await invite(client, org_id, first_address)
    [first] = await inbox.wait_for(first_address)
    invitation_id, token = accept_token(first)
    joiner = {"type": "user", "id": "joiner-1"}
    accepted = await client.command(
        "accept_invitation", org_id=org_id, actor=joiner, invitation_id=invitation_id, token=token, user_id="joiner-1"
    )
    assert accepted["ok"], accepted

    second_address = unique_email("resent")
    await invite(client, org_id, second_address)
    [before] = await inbox.wait_for(second_address)
    resent = await client.command("resend_invitation", org_id=org_id, actor=OWNER, invitation_id=accept_token(before)[0])
    assert resent["ok"], resent
    messages = await inbox.wait_for(second_address, count=2)
    after = next(m for m in messages if m["Message-ID"] == f"<{resent['events'][-1]}@team-members.notifier>")
    old_id, old_token = accept_token(before)
    new_id, new_token = accept_token(after)
    assert old_id == new_id and old_token != new_token
    late = {"type": "user", "id": "late-1"}
    refused = await client.command(
        "accept_invitation", org_id=org_id, actor=late, invitation_id=old_id, token=old_token, user_id="late-1"
    )
    assert not refused["ok"] and refused["error"]["code"] == "invalid_token"
    taken = await client.command(
        "accept_invitation", org_id=org_id, actor=late, invitation_id=new_id, token=new_token, user_id="late-1"
    )
    assert taken["ok"], taken


async def test_an_invitation_revoked_before_its_email_goes_out_is_not_mailed(service_env, tmp_path, membership, own_sink, nc):
    client = Client(nc)
    inbox = sink_inbox(own_sink)
    with running_notifier(service_env, tmp_path, own_sink.url):
        org_id = await new_org(client)
        own_sink.stop()
        address = unique_email("revoked")
        invited = await invite(client, org_id, address)
        assert await delivery_where(client, org_id, lambda d: d["attempts"] >= 1)
        revoked = await client.command(
            "revoke_invitation", org_id=org_id, actor=OWNER, invitation_id=invited["result"]["invitation_id"]
        )
        assert revoked["ok"], revoked
        skipped = await delivery_where(client, org_id, lambda d: d["status"] == "skipped")
        assert skipped is not None and "revoked" in skipped["reason"]

        own_sink.start()
        control = unique_email("control")  # mailed after the revoked one would have been
        await invite(client, org_id, control)
        await inbox.wait_for(control)
        assert inbox.to(address) == []
        assert [d["status"] for d in await deliveries(client, org_id)] == ["skipped", "sent"]


async def test_a_5xx_refusal_is_recorded_as_failed_and_dead_lettered(service_env, tmp_path, membership, nc):
    client = Client(nc)
    refused_address = unique_email("nobody")
    handler = Recorder(refuse={refused_address})
    inbox = Inbox(handler.messages)
    with smtp_server_in_process(handler) as smtp_url, running_notifier(service_env, tmp_path, smtp_url):
        org_id = await new_org(client, seats=2)
        invited = await invite(client, org_id, refused_address)
        fine_address = unique_email("somebody")
        await invite(client, org_id, fine_address)

        failed = await delivery_where(client, org_id, lambda d: d["status"] == "failed")
        assert failed is not None and failed["attempts"] == 1 and "550" in failed["last_error"]
        await inbox.wait_for(fine_address)
        assert inbox.to(refused_address) == []

        js = nc.jetstream()
        subscription = await js.pull_subscribe(subjects.dead_letter("notifier"), stream=subjects.DEAD_LETTER_STREAM)
        [parked] = await subscription.fetch(1, timeout=10)
        assert parked.headers["Dead-Letter-Service"] == "notifier"
        assert parked.headers["Original-Event-Id"] == invited["events"][-1]
        assert "550" in parked.headers["Dead-Letter-Error"]
        assert parked.headers["Original-Subject"] == subjects.event(org_id, "MemberInvited")
        marker = unique_email("marker")
        await invite(client, org_id, marker)
        await inbox.wait_for(marker)  # the sender has gone round since the refusal
        assert (await delivery_where(client, org_id, lambda d: d["status"] == "failed"))["attempts"] == 1
        assert inbox.to(refused_address) == []  # a permanent failure is not retried on its own

        # the operator fixes the mailbox and retries the dead letter: mailed, and the letter leaves the queue
        handler.refuse.clear()
        retried = await client.request("notifier.admin.retry_dead_letter", {"sequence": parked.metadata.sequence.stream})
        assert retried["ok"] and retried["result"]["event_id"] == invited["events"][-1], retried
        await inbox.wait_for(refused_address)
        sent = await delivery_where(client, org_id, lambda d: d["event_id"] == invited["events"][-1] and d["status"] == "sent")
        assert sent is not None and sent["attempts"] == 2
        again = await client.request("notifier.admin.retry_dead_letter", {"sequence": parked.metadata.sequence.stream})
        assert again["error"]["code"] == "not_found"


async def test_queries_health_and_a_rebuild_that_sends_nothing_again(notifier, inbox, nc):
    client = Client(nc)
    health = await client.query("notifier", "health")
    assert health["ok"] and health["result"]["service"] == "notifier"
    assert (await client.query("notifier", "deliveries", org_id="nobody"))["error"]["code"] == "not_found"
    assert (await client.request("notifier.query.deliveries", b'{"org": 1}'))["error"]["code"] == "validation_error"

    org_id = await new_org(client)
    first = unique_email("before")
    await invite(client, org_id, first)
    [mailed] = await inbox.wait_for(first)
    resent = await client.command("resend_invitation", org_id=org_id, actor=OWNER, invitation_id=accept_token(mailed)[0])
    assert resent["ok"], resent
    await inbox.wait_for(first, count=2)
    await delivery_where(client, org_id, lambda d: d["event_id"] == resent["events"][-1] and d["status"] == "sent")
    before = await deliveries(client, org_id)
    assert [d["status"] for d in before] == ["sent", "sent"]
    mail_before = len(inbox.to(first))

    client.timeout = 60
    report = await client.request("notifier.admin.rebuild", {})
    assert report["ok"], report
    assert report["result"]["events"] == 3  # created, invited, resent
    after_rebuild = unique_email("after")
    await invite(client, org_id, after_rebuild)
    await inbox.wait_for(after_rebuild)  # mailed after anything the rebuild could have sent again
    assert len(inbox.to(first)) == mail_before
    assert (await deliveries(client, org_id))[: len(before)] == before
