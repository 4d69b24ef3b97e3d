"""Audit search and export: a cursor is one the service gave out, and a time window is about `occurred_at`."""

from __future__ import annotations

import base64
from datetime import timedelta

import msgspec
import pytest

from shared.contract import queries as q
from shared.requests import reply_handler
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.integration.test_audit_projection import T0, Audit, record


@pytest.fixture
async def audit(clean_nats, database_url):
    async with consuming(clean_nats, database_url, Audit) as service:
        yield service


def forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


BAD_CURSORS = {
    "past bigint": forged("seq:9223372036854775808"),
    "far past bigint": forged("seq:" + "9" * 40),
    "negative": forged("seq:-1"),
    "not base64": "%%%not-a-cursor%%%",
    "not ascii": "séq",
    "another kind": forged("page:3"),
    "no kind": forged("42"),
    "leading zeros": forged("seq:007"),
    "non-ascii digits": forged("seq:\u0661\u0662"),
    "invalid utf-8": base64.urlsafe_b64encode(b"seq:\xff").decode(),
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
@pytest.mark.parametrize("query", ["search", "export"])
async def test_a_cursor_the_service_never_gave_out_is_a_validation_error(audit, query, cursor):
    await record(audit, OrgHistory("acme", T0))
    kind, handle = (q.AuditSearch, audit.read_model.search) if query == "search" else (q.AuditExport, audit.read_model.export)
    respond = reply_handler(kind, handle)
    reply = msgspec.json.decode(await respond(msgspec.json.encode({"org_id": "acme", "cursor": cursor})))
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply


async def test_the_largest_cursor_is_valid_and_past_every_entry(audit):
    await record(audit, OrgHistory("acme", T0))
    found = await audit.search("acme", cursor=forged(f"seq:{2**63 - 1}"))
    assert found == {"entries": [], "next_cursor": None}


def a_history_whose_clock_stepped_back() -> OrgHistory:
    """Entries 1-6 on days 0-5; entry 7 happened on day 2 (a clock stepped back), entry 8 on day 6."""
    history = OrgHistory("acme", T0)
    for day in (1, 2, 3, 4, 5, 2, 6):
        history.invited(T0 + timedelta(days=day, hours=1))
    return history


def days(first: int, last: int) -> dict[str, str]:
    return {"from": (T0 + timedelta(days=first)).isoformat(), "to": (T0 + timedelta(days=last)).isoformat()}


async def test_search_from_and_to_filter_on_occurred_at_even_out_of_time_order(audit):
    await record(audit, a_history_whose_clock_stepped_back())
    assert [e["seq"] for e in (await audit.search("acme", **{"from": (T0 + timedelta(days=4)).isoformat()}))["entries"]] == [
        5,
        6,
        8,
    ]
    assert [e["seq"] for e in (await audit.search("acme", to=(T0 + timedelta(days=3)).isoformat()))["entries"]] == [1, 2, 3, 7]
    assert [e["seq"] for e in (await audit.search("acme", **days(2, 3)))["entries"]] == [3, 7]
    for entry in (await audit.search("acme", **days(4, 6)))["entries"]:
        assert T0 + timedelta(days=4) <= msgspec.convert(entry["occurred_at"], type=type(T0)) < T0 + timedelta(days=6)


async def test_export_from_and_to_filter_on_occurred_at_even_out_of_time_order(audit):
    await record(audit, a_history_whose_clock_stepped_back())
    for window, seqs in ((days(4, 9), [5, 6, 8]), (days(2, 3), [3, 7])):
        exported = await audit.read_model.export(msgspec.convert({"org_id": "acme", **window}, q.AuditExport))
        assert [msgspec.json.decode(line)["seq"] for line in exported["data"].splitlines()] == seqs


async def test_a_window_in_time_order_still_finds_its_entries(audit):
    history = OrgHistory("acme", T0)
    for day in range(1, 9):
        history.invited(T0 + timedelta(days=day, hours=1))
    await record(audit, history)
    assert [e["seq"] for e in (await audit.search("acme", **days(3, 6)))["entries"]] == [4, 5, 6]
    assert (await audit.search("acme", **days(20, 30)))["entries"] == []
    await publish(audit.js, history.invited(T0 + timedelta(days=4, hours=2)))  # appended late, out of order
    await audit.caught_up("acme", 10)
    assert [e["seq"] for e in (await audit.search("acme", **days(3, 6)))["entries"]] == [4, 5, 6, 10]
