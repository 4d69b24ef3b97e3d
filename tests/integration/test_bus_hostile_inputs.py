"""Issue #9, items 4 and 5, over the bus: hostile input gets one short `validation_error`, and a
reply too large for NATS is replaced by a short one instead of none."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from shared import subjects
from shared.requests import MAX_MESSAGE
from shared.responder import Responder
from teamctl.client import Client
from tests.waiting import eventually

OWNER = {"type": "user", "id": "owner-1"}
SHORT_REPLY_BYTES = 1024


async def new_org(client: Client) -> tuple[str, list[str]]:
    owner = {"user_id": "owner-1", "email": "o@acme.io"}
    reply = await client.command("create_organization", name="Acme", plan="pro", owner=owner)
    assert reply["ok"], reply
    return reply["result"]["org_id"], reply["events"]


async def raw_request(nc: nats.NATS, subject: str, body: bytes) -> bytes:
    return (await nc.request(subject, body, timeout=10)).data


def refusal(raw: bytes) -> dict:
    reply = msgspec.json.decode(raw)
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", raw[:500]
    assert len(reply["error"]["message"]) <= MAX_MESSAGE and len(raw) <= SHORT_REPLY_BYTES, raw[:500]
    return reply


async def only_the_org_and_a_later_command_on_the_stream(client: Client, org_id: str, created: list[str]) -> None:
    """A valid command after the refused one; once its event is on the stream, the stream holds
    exactly the org's creation and it, in that order: the relay publishes in the order of the store."""
    barrier = await client.command("change_plan", org_id=org_id, actor=OWNER, plan="enterprise")
    assert barrier["ok"], barrier
    expected = created + barrier["events"]
    js = client.nc.jetstream()
    sub = await js.subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    try:
        on_stream = [(await sub.next_msg(timeout=10)).headers["Nats-Msg-Id"] for _ in expected]
    finally:
        await sub.unsubscribe()
    assert on_stream == expected
    assert (await js.stream_info(subjects.STREAM)).state.messages == len(expected)


async def test_a_role_of_300_000_next_line_characters_gets_one_short_validation_error(membership, nc):
    client = Client(nc)
    org_id, created = await new_org(client)
    body = msgspec.json.encode(
        {"command_id": "nel", "org_id": org_id, "actor": OWNER, "email": "dev@acme.io", "role": "\u0085" * 300_000}
    )
    assert len(body) > 600_000  # raw UTF-8: the whole role crosses the bus
    reply = refusal(await raw_request(nc, subjects.command("invite_member"), body))
    assert "\u0085" not in reply["error"]["message"]
    await only_the_org_and_a_later_command_on_the_stream(client, org_id, created)


@pytest.mark.parametrize(
    "subject, body",
    [
        (subjects.command("invite_member"), b"\xff\xfe"),
        (subjects.command("invite_member"), b'{"command_id": "\xff", "org_id": "o", "actor": {"type": "user", "id": "u"}}'),
        (subjects.command("create_api_key"), b'{"command_id": "c", "org_id": "o", "name": "k\xed\xa0\x80"}'),
        (subjects.command("change_role"), b'{"command_id": "c", "\xc0\xaf": 1}'),
        (subjects.query("membership", "get_organization"), b'{"org_id": "\xe2\x82"}'),
        (subjects.query("membership", "health"), b'{"\xf8\x88\x80\x80\x80": 1}'),
    ],
    ids=["whole body", "in a string", "surrogate in a string", "overlong in a key", "truncated in a query", "in a key of health"],
)
async def test_invalid_utf8_anywhere_in_a_body_gets_validation_error(membership, nc, subject, body):
    refusal(await raw_request(nc, subject, body))


@pytest.mark.parametrize("character", ["\u0000", "\u001b", "\u007f", "\u0085", "\u2028", "\u2029", "\u202e", "\u2066"])
async def test_a_key_name_with_a_control_separator_or_bidi_character_is_refused(membership, nc, character):
    client = Client(nc)
    org_id, created = await new_org(client)
    reply = await client.command("create_api_key", org_id=org_id, actor=OWNER, name=f"k{character}", permissions=["gateway:use"])
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply
    await only_the_org_and_a_later_command_on_the_stream(client, org_id, created)


async def test_a_key_named_k_nul_never_reaches_the_audit_log_which_stays_whole(audit, nc):
    client = Client(nc)
    org_id, _ = await new_org(client)
    refused = await client.command("create_api_key", org_id=org_id, actor=OWNER, name="k\u0000", permissions=["gateway:use"])
    assert refused["error"]["code"] == "validation_error", refused
    accepted = await client.command("create_api_key", org_id=org_id, actor=OWNER, name="k", permissions=["gateway:use"])
    assert accepted["ok"], accepted

    async def both_entries() -> list[dict]:  # the accepted key, sent after the refused one, is the barrier
        found = await client.query("audit", "search", org_id=org_id)
        entries = found["result"]["entries"] if found["ok"] else []
        return entries if len(entries) >= 2 else []

    entries = await eventually(both_entries)
    assert [e["action"] for e in entries] == ["organization.created", "api_key.created"]
    assert entries[1]["event_id"] == accepted["events"][0]
    verified = await client.query("audit", "verify", org_id=org_id)
    assert verified["ok"] and verified["result"]["ok"] is True, verified


@pytest.mark.parametrize("character", ["\u0000", "\u0085", "\u2028", "\u202e"])
@pytest.mark.parametrize(
    "query, body",
    [("get_event", {"event_id": "evt_1{}2"}), ("search", {"org_id": "org_1", "action": "member.{}invited"})],
    ids=["event id", "search action"],
)
async def test_audit_query_text_with_a_nul_or_other_forbidden_character_is_a_validation_error(audit, nc, query, body, character):
    """Found by the fuzz test: PostgreSQL refuses a NUL in a text parameter, which was `internal`."""
    hostile = {name: value.replace("{}", character) for name, value in body.items()}
    refusal(await raw_request(nc, subjects.query("audit", query), msgspec.json.encode(hostile)))


async def test_a_reply_larger_than_max_payload_is_replaced_by_one_short_error(clean_nats):
    server_side = await nats.connect(clean_nats)
    client = await nats.connect(clean_nats)
    too_large = b"x" * (server_side.max_payload + 1)

    async def answer(body: bytes) -> bytes:
        return too_large if body == b"large" else body

    responder = Responder(server_side, concurrency=1)  # one at a time: replies leave in request order
    await responder.serve("test.hostile", "q", answer)
    await server_side.flush()  # the server has the subscription before the first request: else "no responders"
    inbox = f"_HOSTILE.{uuid.uuid4().hex}"
    replies: dict[str, list[bytes]] = {"large": [], "barrier": []}
    barrier_answered = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[1]
        replies[name].append(msg.data)
        if name == "barrier":
            barrier_answered.set()

    await client.subscribe(f"{inbox}.*", cb=on_reply)
    await client.flush()
    await client.publish("test.hostile", b"large", reply=f"{inbox}.large")
    await client.publish("test.hostile", b"barrier", reply=f"{inbox}.barrier")
    await asyncio.wait_for(barrier_answered.wait(), 10)

    [raw] = replies["large"]  # exactly one, and it came before the barrier's
    reply = msgspec.json.decode(raw)
    assert reply["ok"] is False and reply["error"]["details"] == {"reason": "reply_too_large"}, reply
    assert len(raw) <= SHORT_REPLY_BYTES
    assert replies["barrier"] == [b"barrier"]
    await responder.stop()
    await client.close()
    await server_side.close()
