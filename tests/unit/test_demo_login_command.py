"""The `teamctl login` line `make run` prints for the demo owner works when pasted into a shell."""

from __future__ import annotations

import os
import secrets
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack.demo_sign_in import DEMO_EMAIL, DEMO_OWNER, login_command
from services.web.signin_links import read_local_sign_in

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_the_printed_login_line_signs_the_demo_owner_in_from_a_plain_shell(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(48)
    secret_file = tmp_path / "server secret"  # a path a shell must be given quoted
    secret_file.write_text(secret)
    line = login_command({"SERVER_SECRET_FILE": str(secret_file), "PUBLIC_URL": "http://localhost:18080"})

    shell_env = {k: v for k, v in os.environ.items() if k not in ("SERVER_SECRET", "SERVER_SECRET_FILE", "PUBLIC_URL")}
    printed = subprocess.run(["bash", "-c", line], cwd=REPO, env=shell_env, capture_output=True, text=True, timeout=60)

    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip().splitlines()[-1]
    assert link.startswith("http://localhost:18080/session/local?token=")
    signed = read_local_sign_in(secret, link.split("token=", 1)[1], datetime.now(UTC))
    assert (signed.user_id, signed.email) == (DEMO_OWNER, DEMO_EMAIL)
