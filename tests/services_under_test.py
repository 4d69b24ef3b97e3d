"""The project's services as real child processes for tests: started, health-checked, killed."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import msgspec
import nats

from devstack.ports import free_port
from shared.topology import EDGE_SERVICE

REPO = Path(__file__).resolve().parent.parent
# For services started without a secret of the caller's (the benchmark's, say): one for the whole
# process, so that membership and the notifier it starts agree on invitation tokens.
HARNESS_SERVER_SECRET = secrets.token_urlsafe(48)


def with_a_server_secret(env: dict[str, str]) -> dict[str, str]:
    if env.get("SERVER_SECRET") or env.get("SERVER_SECRET_FILE"):
        return env
    return {**env, "SERVER_SECRET": HARNESS_SERVER_SECRET}


def with_a_web_port(name: str, env: dict[str, str]) -> dict[str, str]:
    """The edge listens on a free port unless the test names one: 8080 may be `make run`'s."""
    if name != EDGE_SERVICE or env.get("WEB_PORT"):
        return env
    return {**env, "WEB_PORT": str(free_port())}


class ServiceUnderTest:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        # No metrics port unless the test gives one: parallel runs would fight over the defaults.
        self.env = with_a_web_port(
            name, with_a_server_secret({**os.environ, "METRICS_PORT": "0", **env, "PYTHONUNBUFFERED": "1"})
        )
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The edge's own address (`web` only): http://127.0.0.1:<WEB_PORT>; a restart keeps the port."""
        assert self.name == EDGE_SERVICE, f"{self.name} serves no HTTP"
        return f"http://{self.env.get('WEB_HOST', '127.0.0.1')}:{self.env['WEB_PORT']}"

    def start(self, wait: bool = True) -> ServiceUnderTest:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()}")
            if answers_health(self.env["NATS_URL"], self.name):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""


def answers_health(nats_url: str, name: str) -> bool:
    """Callable from sync code and from inside a running event loop alike."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, _answers_health(nats_url, name)).result()


async def _answers_health(nats_url: str, name: str) -> bool:
    try:
        servers = [url.strip() for url in nats_url.split(",")]
        nc = await nats.connect(servers=servers, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False)
    except Exception:
        return False
    try:
        reply = await nc.request(f"{name}.query.health", b"{}", timeout=1)
        return msgspec.json.decode(reply.data).get("ok") is True
    except Exception:
        return False
    finally:
        await nc.close()


@contextmanager
def running_service(name: str, env: dict[str, str], log_dir: Path) -> Iterator[ServiceUnderTest]:
    service = ServiceUnderTest(name, env, log_dir)
    try:
        yield service.start()
    finally:
        service.stop()
