"""teamctl against a running membership service."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import nats as nats_client

from tests.integration.histories import OrgHistory, publish
from tests.services_under_test import REPO


def teamctl(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teamctl.cli", "--nats-url", nats_url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_person_creates_an_org_invites_someone_and_sees_the_events(membership, clean_nats):
    created = teamctl(
        clean_nats,
        "cmd",
        "create_organization",
        '{"name": "Acme", "plan": "pro", "owner": {"user_id": "u1", "email": "me@acme.io"}}',
    )
    assert created.returncode == 0, created.stderr
    org_id = json.loads(created.stdout)["result"]["org_id"]

    invite = json.dumps({"org_id": org_id, "actor": {"type": "user", "id": "u1"}, "email": "dev@acme.io", "role": "developer"})
    invited = teamctl(clean_nats, "cmd", "invite_member", invite)
    assert invited.returncode == 0 and json.loads(invited.stdout)["ok"] is True, invited.stdout

    refused = teamctl(clean_nats, "cmd", "invite_member", invite.replace("developer", "Emperor"))  # not a role key
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "validation_error"
    # a well-formed key: custom roles need the enterprise plan, checked before whether the org defines it
    custom = teamctl(clean_nats, "cmd", "invite_member", invite.replace("developer", "emperor"))
    assert custom.returncode == 1 and json.loads(custom.stdout)["error"]["code"] == "plan_required"

    events = teamctl(clean_nats, "events", "--org", org_id)
    assert events.returncode == 0
    lines = events.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["OrganizationCreated", "MemberInvited"]
    assert "dev@acme.io" in lines[1]


def test_an_operator_replays_billing_and_gets_the_same_charges(billing, clean_nats):
    created = teamctl(
        clean_nats,
        "cmd",
        "create_organization",
        '{"name": "Acme", "plan": "pro", "owner": {"user_id": "u1", "email": "me@acme.io"}}',
    )
    org_id = json.loads(created.stdout)["result"]["org_id"]
    body = json.dumps({"org_id": org_id, "actor": {"type": "user", "id": "u1"}, "quantity": 2, "accept_charge_cents": 5000})
    assert json.loads(teamctl(clean_nats, "cmd", "add_seats", body).stdout)["ok"]

    def charges() -> list:
        return json.loads(teamctl(clean_nats, "query", "billing", "charges", json.dumps({"org_id": org_id})).stdout)["result"][
            "charges"
        ]

    for _ in range(50):
        before = charges()
        if before:
            break
    replayed = teamctl(clean_nats, "replay", "billing")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = json.loads(replayed.stdout)["result"]
    assert "replaying into billing" in replayed.stderr
    assert report["events"] == 2
    assert charges() == before and len(before) == 1


def test_an_operator_sees_status_and_dead_letters(billing, clean_nats):
    async def park_a_poison_event() -> None:
        nc = await nats_client.connect(clean_nats)
        history = OrgHistory("broken-org", datetime(2026, 1, 1, tzinfo=UTC))
        poison = history.seats_added(1, datetime(2026, 1, 2, tzinfo=UTC))
        poison["data"] = {"quantity": "many"}
        for event in history.events:
            await publish(nc.jetstream(), event)
        await nc.close()

    asyncio.run(park_a_poison_event())
    for _ in range(200):
        listed = teamctl(clean_nats, "dlq", "list", "--service", "billing")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        if letters:
            break
    assert [letter["original_subject"] for letter in letters] == ["membership.events.broken-org.SeatAdded"]
    status = teamctl(clean_nats, "status")
    assert status.returncode == 0, status.stdout
    billing_line = next(line for line in status.stdout.splitlines() if line.startswith("billing"))
    assert billing_line.split()[1] == "ok" and billing_line.split()[-1] == "1"
    still_broken = teamctl(clean_nats, "dlq", "retry", "billing", str(letters[0]["sequence"]))
    assert still_broken.returncode == 1 and json.loads(still_broken.stdout)["error"]["code"] == "internal"
