"""`notifier.query.deliveries` is paged: thousands of deliveries, read through NATS from the notifier
process, each exactly once, oldest first, while new ones keep arriving; every reply fits in NATS's
max_payload; a hostile `limit` or `cursor` gets `validation_error` with a short message."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

from devstack import SmtpSink
from services.notifier.projection import MIGRATIONS
from shared import subjects
from shared.migrations import migrate
from teamctl.client import Client
from tests.integration.histories import publish
from tests.integration.test_notifier_service import running_notifier
from tests.servers import smtp_sink_in_scratch_dir
from tests.waiting import eventually

SUBJECT = subjects.query("notifier", "deliveries")
NOW = datetime.now(UTC)
LONG_ERROR = "550 " + "🚫" * 996  # 1,000 characters, 4 bytes each: 1,000 such rows are 4 MB
COLUMNS = (
    "event_id",
    "org_id",
    "invitation_id",
    "kind",
    "recipient",
    "org_name",
    "inviter",
    "expires_at",
    "occurred_at",
    "status",
    "reason",
    "attempts",
    "next_attempt_at",
    "last_error",
    "sent_at",
    "dead_lettered",
    "sequence",
)


@pytest.fixture
def own_sink() -> Iterator[SmtpSink]:
    with smtp_sink_in_scratch_dir() as sink:
        yield sink


async def known_org(client: Client, nc) -> str:
    """An organization the notifier has seen created, from the stream."""
    org_id = f"org_{uuid.uuid4().hex[:12]}"
    await publish(
        nc.jetstream(),
        {
            "event_id": f"evt_{uuid.uuid4().hex}",
            "event_type": "OrganizationCreated",
            "schema_version": 1,
            "org_id": org_id,
            "sequence": 1,
            "occurred_at": NOW,
            "actor": {"type": "user", "id": "owner"},
            "command_id": "cmd-1",
            "correlation_id": None,
            "data": {
                "name": "Acme",
                "plan": "pro",
                "owner_user_id": "owner",
                "owner_email": "owner@acme.io",
                "seats_included": 3,
                "unit_price_cents": 1000,
                "billing_anchor": NOW,
            },
        },
    )

    async def known():
        return (await client.query("notifier", "deliveries", org_id=org_id))["ok"]

    assert await eventually(known), "the notifier never saw the organization"
    return org_id


def delivery_rows(org_id: str, sequences: range) -> list[tuple]:
    """Settled deliveries (nothing for the sender to do), a third of them with a long error."""
    rows = []
    for sequence in sequences:
        status = ("sent", "skipped", "failed")[sequence % 3]
        rows.append(
            (
                f"evt_{org_id}_{sequence:06d}",
                org_id,
                f"inv_{sequence}",
                "invited",
                f"p{sequence}@acme.io",
                "Acme",
                "owner@acme.io",
                NOW + timedelta(days=7),
                NOW + timedelta(seconds=sequence),
                status,
                "invitation revoked" if status == "skipped" else None,
                1,
                NOW,
                LONG_ERROR if status == "failed" else None,
                NOW if status == "sent" else None,
                status == "failed",
                sequence,
            )
        )
    return rows


async def insert(database_url: str, rows: list[tuple]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.copy_records_to_table("deliveries", schema_name="notifier", columns=COLUMNS, records=rows)
    finally:
        await connection.close()


async def raw_page(nc, body: dict) -> tuple[int, dict]:
    reply = await nc.request(SUBJECT, msgspec.json.encode(body), timeout=10)
    return len(reply.data), msgspec.json.decode(reply.data)


async def test_thousands_of_deliveries_paged_each_exactly_once_while_more_arrive(service_env, tmp_path, own_sink, nc):
    client = Client(nc)
    with running_notifier(service_env, tmp_path, own_sink.url):
        org_id = await known_org(client, nc)
        first, total = 2, 3000  # sequence 1 is the organization's creation
        await insert(service_env["DATABASE_URL"], delivery_rows(org_id, range(first, first + total)))

        seen: list[str] = []
        sizes: list[int] = []
        pages = 0
        cursor = None
        next_sequence = first + total
        while True:
            size, reply = await raw_page(nc, {"org_id": org_id, "limit": 1000, **({"cursor": cursor} if cursor else {})})
            assert reply["ok"], reply
            sizes.append(size)
            seen.extend(d["event_id"] for d in reply["result"]["deliveries"])
            cursor = reply["result"]["next_cursor"]
            pages += 1
            if pages <= 3:  # new deliveries land while a client pages: after what it has read
                await insert(service_env["DATABASE_URL"], delivery_rows(org_id, range(next_sequence, next_sequence + 10)))
                next_sequence += 10
            if cursor is None:
                break
            assert pages < 100

        expected = [row[0] for row in delivery_rows(org_id, range(first, next_sequence))]
        assert seen == expected  # each once, oldest first, the late ones at the end
        assert max(sizes) < nc.max_payload, (max(sizes), nc.max_payload)
        assert pages > total // 1000, "the byte budget never cut a page short: the test proves nothing"

        size, default_page = await raw_page(nc, {"org_id": org_id})
        assert len(default_page["result"]["deliveries"]) == 100 and default_page["result"]["next_cursor"]
        _, last = await raw_page(nc, {"org_id": org_id, "limit": 1000, "cursor": cursor_after(next_sequence - 2)})
        assert [d["event_id"] for d in last["result"]["deliveries"]] == expected[-1:]
        assert last["result"]["next_cursor"] is None


def cursor_after(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"deliveries:{sequence}".encode()).decode()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


HOSTILE_QUERIES = [
    {"limit": 0},
    {"limit": 1001},
    {"limit": -1},
    {"limit": 10**30},
    {"limit": "100"},
    {"limit": 1.5},
    {"cursor": ""},
    {"cursor": "!!!!"},
    {"cursor": "not a cursor at all"},
    {"cursor": b64("deliveries:99999999999999999999999999")},  # overflows bigint
    {"cursor": b64("deliveries:9223372036854775808")},  # 2^63
    {"cursor": b64("deliveries:-1")},
    {"cursor": b64("deliveries:1e5")},
    {"cursor": b64("deliveries:٣")},  # a digit, but not an ASCII one
    {"cursor": b64("seq:5")},  # someone else's cursor
    {"cursor": "\u0085" * 500},
    {"cursor": "A" * 513},
    {"cursor": "\u0085" * 300_000},
    {"cursor": 5},
    {"cursor": None, "limit": None},
]


async def test_a_hostile_limit_or_cursor_is_a_validation_error_that_echoes_nothing(service_env, tmp_path, own_sink, nc):
    client = Client(nc)
    with running_notifier(service_env, tmp_path, own_sink.url):
        org_id = await known_org(client, nc)
        for fields in HOSTILE_QUERIES:
            size, reply = await raw_page(nc, {"org_id": org_id, **fields})
            assert reply["ok"] is False and reply["error"]["code"] == "validation_error", (fields, reply)
            assert size < 1000, (fields, reply)
        _, fine = await raw_page(nc, {"org_id": org_id, "cursor": cursor_after(2**63 - 1), "limit": 1000})
        assert fine["ok"] and fine["result"] == {"deliveries": [], "next_cursor": None}


async def test_deliveries_from_before_the_sequence_column_are_numbered_below_any_later_event(database_url):
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection, "notifier", MIGRATIONS[:1])
        old = [row[:-1] for row in delivery_rows("org_old", range(40, 43))] + [
            row[:-1] for row in delivery_rows("org_other", range(7, 8))
        ]
        await connection.copy_records_to_table("deliveries", schema_name="notifier", columns=COLUMNS[:-1], records=old)
        assert await migrate(connection, "notifier", MIGRATIONS) == [2]
        rows = await connection.fetch("SELECT org_id, event_id, sequence FROM notifier.deliveries ORDER BY org_id, sequence")
    finally:
        await connection.close()
    assert [(r["org_id"], r["sequence"]) for r in rows] == [("org_old", 1), ("org_old", 2), ("org_old", 3), ("org_other", 1)]
    assert [r["event_id"] for r in rows[:3]] == [row[0] for row in old[:3]]  # in their old order
