"""`teamctl demo` against the stack as make run starts it."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.test_team_life import smtp_sink, stack  # noqa: F401  (fixtures)
from tests.services_under_test import REPO


def test_the_demo_tells_a_team_story_and_shows_every_read_model(stack, smtp_sink, service_env):  # noqa: F811
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "teamctl.cli",
            "--nats-url",
            service_env["NATS_URL"],
            "demo",
            "--mail-dir",
            str(smtp_sink.mail_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert "Grace follows the link in her email and joins: True" in out
    members = out.split("Members:")[1].split("Invitations:")[0]
    assert "owner" in members and "admin" in members and "billing-viewer" in members
    assert "project ci: allowed" in out and "project web: denied" in out  # the CI key, scoped to project ci
    assert "Ada defines a custom role billing-viewer (billing:read, members:read, org:read)" in out
    assert "Ada makes him a billing viewer: True" in out
    assert "Alan asks for billing:read: allowed" in out and "Alan asks for members:invite: denied" in out
    assert "role.defined" in out
    assert "seat_proration" in out.split("Charges (billing):")[1]
    assert "organization.created" in out and "invitation.accepted" in out
    emails = out.split("Emails (notifier):")[1]
    assert emails.count(".eml") == 3 and emails.count("sent") == 3
