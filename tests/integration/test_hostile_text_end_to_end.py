"""Whatever membership accepts, every projection stores: a seeded corpus of valid but hostile text,
sent as real commands through membership, relayed, and applied by billing, audit and the notifier,
with zero dead letters and every event in each read model."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import subjects
from shared.contract.common import SAFE_TEXT
from shared.dead_letters import parked
from shared.topology import PROJECTORS
from teamctl.client import Client
from tests.services_under_test import ServiceUnderTest, running_service
from tests.waiting import eventually

SEED = 20261127
ADMITTED = re.compile(SAFE_TEXT)

# Characters people type, and characters that trip up mail headers, SQL, JSON, HTML and terminals,
# all of which the text rule admits.
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ",
    "\"'\\`<>&;%{}[]()$#@!*?=:/|^~",
    "ÄÖÜßéèñçøåÆŒ¡¿«»",
    "日本語中文한국어テスト",
    "🚀👩‍💻🏳️‍🌈🇩🇪😀",
    "العربيةעברית",
    "\u0301\u0308\u20dd\u200d\u200c\ufeff\u00a0\u3000",
    "\ufffd\ufffe\U0001d11e\U0010fffd",
]
FRAGMENTS = [
    "=?utf-8?q?Acme=0D=0AReply-To:_x@evil.example?=",
    "'; DROP TABLE audit.entries; --",
    "%s%s%n",
    "<h1>Locked</h1>",
    "\\u0000",
]


def hostile_text(rng: random.Random, max_length: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < rng.randint(1, max_length):
        if rng.random() < 0.15:
            parts.append(rng.choice(FRAGMENTS))
        else:
            pool = rng.choice(POOLS)
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 12))))
    text = "".join(parts)[:max_length].strip() or "x"
    assert ADMITTED.match(text), "the corpus must stay inside what the rule admits"
    return text


def hostile_local_part(rng: random.Random) -> str:
    atext = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/^_`{|}~-"
    return "".join(rng.choice(atext) for _ in range(rng.randint(1, 30))).replace("=", "")


@pytest.fixture
def notifier(service_env: dict[str, str], tmp_path: Path, membership: ServiceUnderTest, smtp_sink) -> Iterator[ServiceUnderTest]:
    with running_service("notifier", {**service_env, "SMTP_URL": smtp_sink.url}, tmp_path) as service:
        yield service


async def test_a_hostile_corpus_reaches_every_projection_without_a_dead_letter(membership, billing, audit, notifier, nc):
    rng = random.Random(SEED)
    client = Client(nc)
    events = 0
    for n in range(6):
        owner = {"type": "user", "id": f"owner{n}"}
        created = await client.command(
            "create_organization",
            command_id=hostile_text(rng, 128),
            correlation_id=hostile_text(rng, 128),
            actor=owner,
            name=hostile_text(rng, 200),
            plan="pro",
            owner={"user_id": owner["id"], "email": f"{hostile_local_part(rng)}@Acme-{n}.io"},
        )
        assert created["ok"], (SEED, created)
        org_id = created["result"]["org_id"]
        events += len(created["events"])
        for _ in range(2):
            invited = await client.command(
                "invite_member",
                command_id=hostile_text(rng, 128),
                correlation_id=hostile_text(rng, 128),
                org_id=org_id,
                actor=owner,
                email=f"{hostile_local_part(rng)}@bücher-{n}.de",
                role="developer",
            )
            assert invited["ok"], (SEED, invited)
            events += len(invited["events"])
        keyed = await client.command(
            "create_api_key",
            command_id=hostile_text(rng, 128),
            org_id=org_id,
            actor=owner,
            name=hostile_text(rng, 200),
            permissions=["gateway:use"],
        )
        assert keyed["ok"], (SEED, keyed)
        events += len(keyed["events"])

    js = nc.jetstream()

    async def all_applied() -> bool:
        for durable in PROJECTORS:
            info = await js.consumer_info(subjects.STREAM, durable)
            if info.num_pending or info.num_ack_pending or info.delivered.stream_seq < events:
                return False
        return True

    assert await eventually(all_applied, timeout=60), "every consumer applies every event"
    assert await parked(js) == [], "nothing was dead-lettered"
    stream = await js.stream_info(subjects.STREAM)
    assert stream.state.messages == events
