"""Hostile text and hostile addresses, end to end: membership or the stream's history -> the notifier
process -> the real SMTP sink, whose files are read back with Python's email parser.

The sink writes each message with the envelope in front (`X-MailFrom`, `X-RcptTo`), so a test sees
both what the headers say and whom the SMTP transaction really addressed.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devstack import SmtpSink
from teamctl.client import Client
from tests.integration.histories import publish
from tests.integration.test_notifier_service import OWNER_EMAIL, invite, new_org, running_notifier
from tests.servers import smtp_sink_in_scratch_dir
from tests.waiting import eventually

OUR_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Team-Members-Invitation", "MIME-Version", "Content-Type"]
ENVELOPE = ["X-MailFrom", "X-RcptTo"]  # written by the sink
REPRODUCTION = "=?utf-8?q?Acme=0D=0AReply-To:_attacker@evil.example=0D=0AContent-Type:_text/html=0D=0A=0D=0A<h1>Locked</h1>?="
SETTLED = {"sent", "failed", "skipped"}


def read_back(raw: bytes):
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)


def received(sink: SmtpSink) -> list:
    return [read_back(path.read_bytes()) for path in sink.messages()]


def leaf_types(message) -> list[str]:
    return [part.get_content_type() for part in message.walk()]


def assert_ours(message, recipient: str) -> None:
    """Exactly our headers and parts, and one envelope recipient: the stored address."""
    assert message.keys() == ENVELOPE + OUR_HEADERS, message.keys()
    assert message["X-RcptTo"] == recipient and message["To"] == recipient
    assert message["X-MailFrom"] == "no-reply@team-members.localhost"
    assert leaf_types(message) == ["multipart/alternative", "text/plain", "text/html"]
    html = message.get_body(("html",)).get_content()
    assert html.lstrip().startswith("<!DOCTYPE html>") and "<h1>" not in html


async def all_settled(client: Client, org_id: str, count: int) -> list[dict]:
    async def probe():
        reply = await client.query("notifier", "deliveries", org_id=org_id)
        found = reply["result"]["deliveries"] if reply["ok"] else []
        return found if len(found) == count and all(d["status"] in SETTLED for d in found) else None

    settled = await eventually(probe, timeout=30)
    assert settled, "the deliveries did not settle"
    return settled


@pytest.fixture
def own_sink() -> Iterator[SmtpSink]:
    with smtp_sink_in_scratch_dir() as sink:
        yield sink


async def test_the_reported_org_name_through_membership_is_a_subject_not_headers(service_env, tmp_path, membership, own_sink, nc):
    client = Client(nc)
    with running_notifier(service_env, tmp_path, own_sink.url):
        org_id = await new_org(client, REPRODUCTION)
        address = f"invitee.{uuid.uuid4().hex[:8]}@example.com"
        await invite(client, org_id, address)
        [delivery] = await all_settled(client, org_id, 1)
    assert delivery["status"] == "sent", delivery
    [message] = received(own_sink)
    assert_ours(message, address)
    assert message["Reply-To"] is None
    assert message["Subject"] == f"{OWNER_EMAIL} invited you to join {REPRODUCTION} on Team Members"
    assert REPRODUCTION in message.get_body(("plain",)).get_content()


class History:
    """Events as an older membership could have written them, published straight to the stream."""

    def __init__(self, name: str, owner_email: str) -> None:
        self.org_id = f"org_{uuid.uuid4().hex[:12]}"
        self.sequence = 0
        self.events: list[dict] = []
        self.now = datetime.now(UTC)
        self.event(
            "OrganizationCreated",
            {
                "name": name,
                "plan": "pro",
                "owner_user_id": "owner",
                "owner_email": owner_email,
                "seats_included": 3,
                "unit_price_cents": 1000,
                "billing_anchor": self.now,
            },
            {"type": "user", "id": "owner"},
        )

    def event(self, event_type: str, data: dict, actor: dict) -> dict:
        self.sequence += 1
        event = {
            "event_id": f"evt_{uuid.uuid4().hex}",
            "event_type": event_type,
            "schema_version": 1,
            "org_id": self.org_id,
            "sequence": self.sequence,
            "occurred_at": self.now,
            "actor": actor,
            "command_id": f"cmd-{uuid.uuid4().hex}",
            "correlation_id": None,
            "data": data,
        }
        self.events.append(event)
        return event

    def key(self, name: str) -> dict:
        key_id = f"key_{self.sequence}"
        self.event(
            "ApiKeyCreated",
            {
                "key_id": key_id,
                "name": name,
                "prefix": "tm_x",
                "owner_user_id": "owner",
                "permissions": ["members:manage"],
                "expires_at": None,
            },
            {"type": "user", "id": "owner"},
        )
        return {"type": "api_key", "id": key_id}

    def invite(self, address: str, by: dict) -> dict:
        return self.event(
            "MemberInvited",
            {
                "invitation_id": f"inv_{uuid.uuid4().hex[:12]}",
                "email": address,
                "role": "developer",
                "invited_by": by,
                "expires_at": self.now + timedelta(days=7),
            },
            by,
        )


HOSTILE_NAMES = [
    REPRODUCTION,
    "Acme\r\nReply-To: attacker@evil.example\r\n\r\n<h1>Locked</h1>",
    "Acme\u0085Bcc: victim@evil.example\u0085\u0085<h1>Locked</h1>",
    "Acme\u2028Bcc: victim@evil.example\u2029<h1>Locked</h1>",
    "=?utf-8?b?QWNtZQ0KUmVwbHktVG86IGF0dGFja2VyQGV2aWwuZXhhbXBsZQ0KDQo8aDE+TG9ja2VkPC9oMT4=?=",
]


async def test_hostile_names_from_history_in_org_inviter_and_key_never_make_a_header(service_env, tmp_path, own_sink, nc):
    client = Client(nc)
    js = nc.jetstream()
    sent_to: list[str] = []
    with running_notifier(service_env, tmp_path, own_sink.url):
        histories = []
        for n, hostile in enumerate(HOSTILE_NAMES):
            # the owner's email is how the email names a user who invites: old history did not check it
            history = History(name=hostile, owner_email=f"owner@acme.io{hostile}")
            key = history.key(hostile)
            for by in ({"type": "user", "id": "owner"}, key):
                address = f"p{n}.{by['type']}.{uuid.uuid4().hex[:6]}@acme.io"
                history.invite(address, by)
                sent_to.append(address)
            histories.append(history)
            for event in history.events:
                await publish(js, event)
        for history in histories:
            settled = await all_settled(client, history.org_id, 2)
            assert [d["status"] for d in settled] == ["sent", "sent"], settled

    messages = received(own_sink)
    assert sorted(m["X-RcptTo"] for m in messages) == sorted(sent_to)
    by_recipient = {m["X-RcptTo"]: m for m in messages}
    for n, hostile in enumerate(HOSTILE_NAMES):
        shown = "".join(" " if c in "\r\n\u0085\u2028\u2029" else c for c in hostile)
        user_sent, key_sent = (by_recipient[a] for a in sent_to[2 * n : 2 * n + 2])
        for message in (user_sent, key_sent):
            assert_ours(message, message["X-RcptTo"])
        assert user_sent["Subject"] == f"owner@acme.io{shown} invited you to join {shown} on Team Members"
        assert key_sent["Subject"] == f"API key {shown} invited you to join {shown} on Team Members"


async def test_each_email_has_one_envelope_recipient_the_stored_address_or_fails_with_a_reason(
    service_env, tmp_path, own_sink, nc
):
    client = Client(nc)
    js = nc.jetstream()
    owner = {"type": "user", "id": "owner"}
    history = History(name="Acme", owner_email="owner@acme.io")
    unmailable = {
        "x,second@acme.io": "not a plain dot-atom",  # once mailed both x and second@acme.io
        "<x>@acme.io": "not a plain dot-atom",  # once mailed x
        "ünïcode@acme.io": "non-ASCII",  # accepted by older versions; no SMTPUTF8 here
        "x@bücher.example": "non-ASCII",
        "=?utf-8?q?x=0D=0ABcc:_victim@evil.example?=@acme.io": "encoded word",
        "x\u0000y@acme.io": "non-ASCII",  # the projection keeps the event, with U+FFFD for the NUL
    }
    mailable = ["plain@acme.io", "o'neil+tag@acme.io", "x@xn--bcher-kva.example"]
    for address in [*unmailable, *mailable]:
        history.invite(address, owner)
    with running_notifier(service_env, tmp_path, own_sink.url):
        for event in history.events:
            await publish(js, event)
        settled = await all_settled(client, history.org_id, len(unmailable) + len(mailable))

    by_address = {d["to"].replace("\ufffd", "\u0000"): d for d in settled}
    for address, reason in unmailable.items():
        delivery = by_address[address]
        assert delivery["status"] == "failed" and delivery["attempts"] == 1, delivery
        assert delivery["last_error"].startswith("the stored recipient cannot be mailed") and reason in delivery["last_error"]
        assert len(delivery["last_error"]) < 300
    assert all(by_address[a]["status"] == "sent" for a in mailable)
    messages = received(own_sink)
    assert sorted(m["X-RcptTo"] for m in messages) == sorted(mailable)  # one recipient each, nobody else
    for message in messages:
        assert_ours(message, message["X-RcptTo"])
