"""Audit replies fit the bus whatever the entries hold: pages and export chunks are sized in encoded bytes."""

from __future__ import annotations

from teamctl.client import Client
from tests.waiting import eventually


async def test_pages_and_export_chunks_of_long_unicode_entries_fit_the_bus(audit, nc):
    """From the outside review: sizes were counted in characters, so 4-byte emoji made every chunk too large."""
    client = Client(nc)
    owner = {"type": "user", "id": "owner-1"}
    created = await client.command(
        "create_organization", actor=owner, name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    for n in range(1200):
        made = await client.command(
            "create_api_key", org_id=org_id, actor=owner, name=f"{n:04}" + "\U0001f600" * 196, permissions=["org:read"]
        )
        assert made["ok"], made

    async def audited() -> bool:
        checked = await client.query("audit", "verify", org_id=org_id)
        return checked["ok"] and checked["result"]["entries_checked"] >= 1201

    assert await eventually(audited, timeout=60)
    seen, cursor = 0, None
    while True:
        page = await client.query("audit", "search", org_id=org_id, limit=1000, **({"cursor": cursor} if cursor else {}))
        assert page["ok"], page
        seen += len(page["result"]["entries"])
        cursor = page["result"]["next_cursor"]
        if not cursor:
            break
    assert seen == 1201
    for fmt in ("ndjson", "csv"):
        exported, cursor = 0, None
        while True:
            chunk = await client.query("audit", "export", org_id=org_id, format=fmt, **({"cursor": cursor} if cursor else {}))
            assert chunk["ok"], chunk
            exported += chunk["result"]["entries"]
            cursor = chunk["result"]["next_cursor"]
            if not cursor:
                break
        assert exported == 1201
