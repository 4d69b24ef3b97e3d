"""The whole stack as `make run` starts it: the supervisor, pointed at the tests' own servers."""

from __future__ import annotations

import email
import os
import re
import signal
import subprocess
import sys
import time
from email.message import Message
from pathlib import Path

from devstack.ports import free_port
from tests.services_under_test import REPO, with_a_server_secret

LINK = re.compile(r"/invitations/(?P<invitation>[^/\s\"<]+)/accept\?token=(?P<token>[A-Za-z0-9_\-%]+)")


class Supervisor:
    """`python -m devstack.run` with NATS_URL, DATABASE_URL and SMTP_URL given: services only.

    Its var/ (stack record, guardian log) is the test's own, beside the log, never the repository's.
    """

    def __init__(self, env: dict[str, str], log_path: Path, var_dir: Path | None = None) -> None:
        self.env = with_a_server_secret({**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        self.log_path = log_path
        self.var_dir = var_dir or log_path.parent / "var"
        # The edge on a port of its own: 8080 may be a `make run`'s, or another test's.
        self.web_port = int(self.env.get("WEB_PORT") or free_port())
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "devstack.run", "--var-dir", str(self.var_dir), "--web-port", str(self.web_port)],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while "READY" not in self.output():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not come up:\n{self.output()[-4000:]}")
            time.sleep(0.2)

    @property
    def web_url(self) -> str:
        """The edge this stack started, for tests that speak HTTP to it."""
        return f"http://127.0.0.1:{self.web_port}"

    def stop(self) -> int:
        """Ctrl-C, as a person would."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def mails_to(mail_dir: Path, address: str) -> list[Message]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes())
        if address in (message.get("To") or ""):
            found.append(message)
    return found


def accept_link(message: Message) -> tuple[str, str]:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            match = LINK.search(part.get_payload(decode=True).decode())
            if match:
                from urllib.parse import unquote

                return unquote(match["invitation"]), unquote(match["token"])
    raise AssertionError("no accept link in the email")
