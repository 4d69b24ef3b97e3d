"""Whatever text membership accepts, audit stores, returns and hashes to the same chain (real PostgreSQL).

Membership accepts any Unicode except C0/C1 controls, DEL, U+2028/2029 and the bidi embeddings,
overrides and isolates; names up to 200 characters. Emoji, CJK and combining marks included.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import asyncpg
import msgspec
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.audit.entries import GENESIS_HASH, canonical_json, entry_for
from services.audit.projection import LIVE_SCHEMA, AuditProjection
from services.audit.read_model import AuditReadModel
from shared.bus import declare_streams
from shared.consumer import apply_in_order, prepare
from shared.contract import queries as q
from shared.contract.events import decode_envelope
from shared.stream_heads import StreamHeads
from tests.integration.histories import OrgHistory
from tests.integration.test_audit_projection import T0

REFUSED_BY_MEMBERSHIP = "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Cc is C0, DEL and C1; Cs (lone surrogates) cannot be UTF-8 at all.
ACCEPTED = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters=REFUSED_BY_MEMBERSHIP)
EMOJI_CJK_COMBINING = st.sampled_from(
    ["👩‍👩‍👧‍👦", "🏳️‍🌈", "漢字", "한국어", "é", "é", "Å", "\u0301", "\ufeff", "\u200d", "𝕏", "ﷺ", "\U0010fffd"]
)
NAMES = st.lists(st.one_of(ACCEPTED, EMOJI_CJK_COMBINING), min_size=1, max_size=60).map("".join).map(lambda name: name[:200])
LONG_NAMES = st.text(ACCEPTED, min_size=150, max_size=200)


@pytest.fixture
async def store(clean_nats, database_url):
    await declare_streams(clean_nats)
    nc = await nats.connect(clean_nats)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    projection = AuditProjection(LIVE_SCHEMA)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
    yield pool, projection, AuditReadModel(pool, LIVE_SCHEMA, StreamHeads(nc.jetstream()))
    await pool.close()
    await nc.close()


def a_history_named(org_name: str, key_name: str, member_email: str) -> OrgHistory:
    history = OrgHistory(f"org_{uuid.uuid4().hex[:12]}", T0)
    history.events[0]["data"]["name"] = org_name
    history.invited(T0 + timedelta(hours=1))["data"]["email"] = member_email
    event = history._event(
        "ApiKeyCreated",
        T0 + timedelta(hours=2),
        {
            "key_id": "key_1",
            "name": key_name,
            "prefix": "tm_live_abc",
            "owner_user_id": "owner",
            "permissions": ["gateway:use"],
            "expires_at": None,
        },
    )
    event["correlation_id"] = key_name[:128]
    return history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(org_name=NAMES, key_name=st.one_of(NAMES, LONG_NAMES), local_part=NAMES)
async def test_any_name_membership_accepts_is_stored_and_hashes_the_same_after_the_round_trip(
    store, org_name, key_name, local_part
):
    pool, projection, read_model = store
    history = a_history_named(org_name, key_name, f"{local_part}@例え.jp")
    envelopes = [decode_envelope(msgspec.json.encode(event)) for event in history.events]
    async with pool.acquire() as connection, connection.transaction():
        await apply_in_order(connection, projection, envelopes)  # the consumer's own transaction, minus NATS

    found = msgspec.json.decode(
        msgspec.json.encode(await read_model.search(msgspec.convert({"org_id": history.org_id}, q.AuditSearch)))
    )
    entries = found["entries"]
    assert [e["metadata"].get("name") for e in entries] == [org_name, None, key_name]
    assert entries[1]["metadata"]["email"] == f"{local_part}@例え.jp"
    prev = GENESIS_HASH
    for envelope, entry in zip(envelopes, entries, strict=True):
        built = entry_for(envelope, entry["seq"], prev)
        body = {k: v for k, v in entry.items() if k not in ("prev_hash", "hash")}
        assert canonical_json(body) == canonical_json({k: v for k, v in built.items() if k not in ("prev_hash", "hash")})
        assert canonical_json(json.loads(canonical_json(body))) == canonical_json(body)  # stable under a round trip
        assert entry["hash"] == built["hash"] == hashlib.sha256((prev + "\n" + canonical_json(body)).encode()).hexdigest()
        prev = entry["hash"]
    verified = await read_model.verify(history.org_id)
    assert (verified["ok"], verified["entries_checked"], verified["head_hash"]) == (True, 3, prev), verified
