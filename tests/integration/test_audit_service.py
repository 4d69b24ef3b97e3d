"""Audit as a process fed by membership, and what an auditor does with teamctl."""

from __future__ import annotations

import asyncio
import json
import time

from teamctl.client import Client
from tests.integration.test_cli import teamctl

OWNER = {"type": "user", "id": "owner-1"}


async def test_an_auditor_searches_verifies_and_exports_a_teams_history(audit, nc, tmp_path, clean_nats):
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    invited = await client.command(
        "invite_member", org_id=org_id, actor=OWNER, email="dev@acme.io", role="admin", correlation_id="ticket-7"
    )
    key = await client.command("create_api_key", org_id=org_id, actor=OWNER, name="ci", permissions=["gateway:use"])
    assert invited["ok"] and key["ok"]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = await client.query("audit", "search", org_id=org_id)
        if found["ok"] and len(found["result"]["entries"]) == 3:
            break
        await asyncio.sleep(0.1)
    entries = found["result"]["entries"]
    assert [e["action"] for e in entries] == ["organization.created", "member.invited", "api_key.created"]
    assert entries[1]["correlation_id"] == "ticket-7" and entries[1]["actor"] == OWNER
    assert key["result"]["secret"] not in json.dumps(entries)

    verified = teamctl(clean_nats, "audit", "verify", "--org", org_id)
    assert verified.returncode == 0 and json.loads(verified.stdout)["result"]["entries_checked"] == 3
    target = tmp_path / "audit.ndjson"
    exported = teamctl(clean_nats, "audit", "export", "--org", org_id, "--output", str(target))
    assert exported.returncode == 0 and "exported 3 entries" in exported.stderr
    assert [json.loads(line)["hash"] for line in target.read_text().splitlines()] == [e["hash"] for e in entries]
    raw = await client.query("audit", "get_event", event_id=invited["events"][0])
    assert raw["result"]["data"]["email"] == "dev@acme.io"
    replayed = teamctl(clean_nats, "replay", "audit")
    assert replayed.returncode == 0, replayed.stdout
    after = await client.query("audit", "search", org_id=org_id)
    assert after["result"]["entries"] == entries
