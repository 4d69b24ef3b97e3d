"""teamctl against a running membership service."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.service_processes import REPO


def teamctl(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "--nats-url", nats_url, *args],
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

    refused = teamctl(clean_nats, "cmd", "invite_member", invite.replace("developer", "emperor"))
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"]["code"] == "validation_error"

    events = teamctl(clean_nats, "events", "--org", org_id)
    assert events.returncode == 0
    lines = events.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["OrganizationCreated", "MemberInvited"]
    assert "dev@acme.io" in lines[1]


def test_an_operator_replays_billing_and_gets_the_same_charges(billing, clean_nats):
    created = teamctl(clean_nats, "cmd", "create_organization", '{"name": "Acme", "plan": "pro", "owner": {"user_id": "u1", "email": "me@acme.io"}}')
    org_id = json.loads(created.stdout)["result"]["org_id"]
    body = json.dumps({"org_id": org_id, "actor": {"type": "user", "id": "u1"}, "quantity": 2, "accept_charge_cents": 5000})
    assert json.loads(teamctl(clean_nats, "cmd", "add_seats", body).stdout)["ok"]

    def charges() -> list:
        return json.loads(teamctl(clean_nats, "query", "billing", "charges", json.dumps({"org_id": org_id})).stdout)["result"]["charges"]

    for _ in range(50):
        before = charges()
        if before:
            break
    replayed = teamctl(clean_nats, "replay", "billing")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    report = json.loads(replayed.stdout.split("\n", 1)[1])["result"]
    assert report["events"] == 2
    assert charges() == before and len(before) == 1
