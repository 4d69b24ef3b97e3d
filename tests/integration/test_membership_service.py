"""The membership service as a process: commands over NATS in, events on JetStream out."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from shared import subjects
from shared.contract.events import decode_envelope
from teamctl.client import Client

OWNER = {"type": "user", "id": "owner-1"}


async def create_org(client: Client, **extra) -> str:
    reply = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "Owner@Acme.io"}, **extra
    )
    assert reply["ok"], reply
    return reply["result"]["org_id"]


async def stream_messages(nc, expected: int, timeout: float = 10.0) -> list:
    js = nc.jetstream()
    sub = await js.subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    messages = []
    try:
        while len(messages) < expected:
            messages.append(await sub.next_msg(timeout=timeout))
    finally:
        await sub.unsubscribe()
    return messages


async def stream_count(nc) -> int:
    return (await nc.jetstream().stream_info(subjects.STREAM)).state.messages


async def test_a_command_becomes_an_event_on_the_stream_with_the_contract_envelope(membership, nc):
    client = Client(nc)
    org_id = await create_org(client, correlation_id="corr-1")
    reply = await client.command("invite_member", org_id=org_id, actor=OWNER, email="dev@acme.io", role="developer")
    assert reply["ok"], reply

    created, invited = await stream_messages(nc, 2)
    assert created.subject == f"membership.events.{org_id}.OrganizationCreated"
    assert invited.subject == f"membership.events.{org_id}.MemberInvited"
    envelope = decode_envelope(invited.data)
    assert invited.headers["Nats-Msg-Id"] == envelope.event_id == reply["events"][0]
    assert (envelope.sequence, envelope.org_id, envelope.actor.id) == (2, org_id, "owner-1")
    assert envelope.data["invitation_id"] == reply["result"]["invitation_id"]
    assert envelope.data["email"] == "dev@acme.io"
    assert decode_envelope(created.data).correlation_id == "corr-1"
    assert decode_envelope(created.data).data["owner_email"] == "owner@acme.io"


async def test_a_repeated_command_id_returns_the_first_reply_and_records_nothing_new(membership, nc):
    client = Client(nc)
    org_id = await create_org(client)
    body = {"command_id": "invite-once", "org_id": org_id, "actor": OWNER, "email": "a@acme.io", "role": "admin"}
    first = await client.request(subjects.command("invite_member"), body)
    second = await client.request(subjects.command("invite_member"), body)
    assert first["ok"] and first == second
    marker = await client.command("invite_member", org_id=org_id, actor=OWNER, email="marker@acme.io", role="developer")
    messages = await stream_messages(nc, 3)  # the marker is published after anything the repeat could have recorded
    assert [decode_envelope(m.data).event_id for m in messages[1:]] == first["events"] + marker["events"]
    assert await stream_count(nc) == 3


async def test_a_repeat_after_a_restart_still_gets_the_first_reply(membership, nc):
    client = Client(nc)
    org_id = await create_org(client)
    body = {"command_id": "key-once", "org_id": org_id, "actor": OWNER, "name": "ci", "permissions": ["gateway:use"]}
    first = await client.request(subjects.command("create_api_key"), body)
    membership.kill()
    membership.start()
    second = await client.request(subjects.command("create_api_key"), body)
    assert first["ok"] and first == second
    authorized = await client.query("membership", "authorize", api_key=first["result"]["secret"], permission="gateway:use")
    assert authorized["result"]["allowed"] is True


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"command_id": "x", "actor": {"type": "user", "id": "u"}, "org_id": "bad org!", "email": "a@b.io", "role": "admin"}',
        b'{"command_id": "x", "actor": {"type": "user", "id": "u"}, "org_id": "o", "email": "not-an-email", "role": "admin"}',
        b'{"command_id": "x", "actor": {"type": "user", "id": "u"}, "org_id": "o", "email": "a@b.io", "role": "Emperor"}',
        b'{"command_id": "x", "actor": {"type": "user", "id": "u"}, "org_id": "o", "email": "a@b.io", "role": "admin", "extra": 1}',
        b'{"command_id": 5, "actor": {"type": "user", "id": "u"}, "org_id": "o", "email": "a@b.io", "role": "admin"}',
        b"\xff\xfe",
    ],
)
async def test_malformed_input_gets_a_validation_error_and_the_service_keeps_serving(membership, nc, body):
    client = Client(nc)
    reply = await client.request(subjects.command("invite_member"), body)
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply
    assert (await client.query("membership", "health"))["result"]["ok"] is True


async def test_twelve_concurrent_invitations_for_two_free_seats_give_exactly_two(membership, nc):
    client = Client(nc)
    org_id = await create_org(client)  # pro: 3 seats, the owner holds one
    replies = await asyncio.gather(
        *(
            client.command("invite_member", org_id=org_id, actor=OWNER, email=f"dev{i}@acme.io", role="developer")
            for i in range(12)
        )
    )
    codes = sorted("ok" if r["ok"] else r["error"]["code"] for r in replies)
    assert codes == ["ok"] * 2 + ["seat_purchase_required"] * 10
    quote = await client.query("membership", "seat_quote", org_id=org_id)
    assert (quote["result"]["seats_used"], quote["result"]["seats_available"]) == (3, 0)


async def test_queries_answer_with_the_organization_and_its_seat_quote(membership, nc):
    client = Client(nc)
    org_id = await create_org(client)
    view = await client.query("membership", "get_organization", org_id=org_id)
    assert view["ok"] and view["result"]["members"][0]["email"] == "owner@acme.io"
    missing = await client.query("membership", "get_organization", org_id="nope")
    assert missing["error"]["code"] == "not_found"
    allowed = await client.query("membership", "authorize", org_id=org_id, user_id="owner-1", permission="billing:manage")
    assert allowed["result"]["allowed"] is True and allowed["result"]["role"] == "owner"
    stranger = await client.query("membership", "authorize", org_id=org_id, user_id="stranger", permission="org:read")
    assert stranger["result"]["allowed"] is False


async def test_no_secret_reaches_the_stream(membership, nc):
    client = Client(nc)
    org_id = await create_org(client)
    key = await client.command("create_api_key", org_id=org_id, actor=OWNER, name="ci", permissions=["gateway:use"])
    invite = await client.command("invite_member", org_id=org_id, actor=OWNER, email="x@acme.io", role="developer")
    assert key["ok"] and invite["ok"]
    secret = key["result"]["secret"]
    messages = await stream_messages(nc, 3)
    for message in messages:
        assert secret.encode() not in message.data
        assert secret.split(".")[-1].encode() not in message.data
        assert b"secret_hash" not in message.data and b"token" not in message.data
    assert msgspec.json.decode(messages[1].data)["data"]["prefix"] == key["result"]["prefix"]
