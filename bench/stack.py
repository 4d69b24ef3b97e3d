"""Servers and services for a benchmark run: scratch directories, free ports, stopped afterwards."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import NatsServer, PostgresServer, free_port
from devstack.smtp_sink_server import SmtpSink
from shared import subjects
from teamctl.client import Client
from tests.services_under_test import REPO, ServiceUnderTest

PROJECTORS = ("billing", "audit", "notifier")

# Beside `make run`'s own var/, not in /tmp: on this machine creating a file under /tmp costs about
# 900 µs of CPU (16-60 µs elsewhere on the same disk), which the SMTP sink pays per message.
SCRATCH_ROOT = REPO / "var" / "bench"


@dataclass
class BenchStack:
    nats: NatsServer
    postgres: PostgresServer
    scratch: Path

    def database(self, name: str) -> str:
        self.postgres.create_database(name)
        return self.postgres.dsn(name)

    def service(self, name: str, database: str, **env: str) -> ServiceUnderTest:
        variables = {"NATS_URL": self.nats.url, "DATABASE_URL": database, "LOG_LEVEL": "warning", **env}
        return ServiceUnderTest(name, variables, self.scratch)


@contextmanager
def bench_stack() -> Iterator[BenchStack]:
    SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=SCRATCH_ROOT))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        nats = NatsServer(scratch / "nats", free_port())
        nats.start()
        stack.callback(nats.stop)
        postgres = PostgresServer(scratch / "pg", free_port())
        postgres.start()
        stack.callback(postgres.stop)
        yield BenchStack(nats, postgres, scratch)


class ServiceFromTree(ServiceUnderTest):
    """A service run from another source tree (a checkout of main, say) with this interpreter and its
    packages: the baseline a benchmark compares this tree's service with, in the same run."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, tree: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(name, env, log_dir)
        self.tree = tree

    def start(self, wait: bool = True) -> ServiceFromTree:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=self.tree,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            wait_answering(self.base_url + "/healthz", self.popen, timeout=30)
        return self


def wait_answering(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `url` answers 200 (two edges both answer web.query.health, so the bus cannot tell them apart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: its process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@contextmanager
def raw_http_responder(scratch: Path) -> Iterator[str]:
    """`bench.raw_http` in a process of its own: the load client's ceiling."""
    port = free_port()
    with open(scratch / "raw_http.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_http", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_answering(f"http://127.0.0.1:{port}/", process, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


async def wait_drained(nats_url: str, smtp: SmtpSink, mails: int, timeout: float = 300.0) -> float:
    """Until every projector has settled every message of MEMBERSHIP and the sink holds `mails`
    emails: the work an invitation causes downstream is done. Returns the seconds it took."""
    started = time.perf_counter()
    client = await Client.connect(nats_url, timeout=30)
    try:
        last = (await client.nc.jetstream().stream_info(subjects.STREAM)).state.last_seq
        while True:
            applied = [(await client.query(name, "projection_status"))["result"]["events_applied"] for name in PROJECTORS]
            if min(applied) >= last and len(smtp.messages()) >= mails:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"not drained in {timeout} s: {dict(zip(PROJECTORS, applied, strict=True))} of {last}")
            await asyncio.sleep(0.5)  # each query sorts a lag window: keep the polling light
    finally:
        await client.close()
