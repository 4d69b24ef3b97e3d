"""`make run` leaves nothing behind: not when its terminal closes, not when it is killed, not even with kill -9.

Each test starts the whole stack as `make run` does (NATS, PostgreSQL, the SMTP sink, five services),
in a var/ directory and on ports of its own, and ends it the way a person or the system would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from devstack import free_port
from devstack.ports import port_is_free
from devstack.process import still_alive_after
from shared.topology import SERVICES
from tests.servers import scratch_dir
from tests.services_under_test import REPO

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT = 180.0
# Bounded by the slowest recorded stop (PostgreSQL's 30 s) plus the services before it.
STOP_TIMEOUT = 90.0
CONFIGURED_ELSEWHERE = ("NATS_URL", "DATABASE_URL", "SMTP_URL", "SERVER_SECRET", "SERVER_SECRET_FILE", "PUBLIC_URL", "WEB_PORT")


class LocalStackRun:
    """`python -m devstack.run`, in a session of its own as a terminal would start it."""

    def __init__(self, var_dir: Path, ports: tuple[int, int, int, int], log_path: Path) -> None:
        self.var_dir = var_dir
        self.nats_port, self.postgres_port, self.smtp_port, self.web_port = ports
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.seen: list[psutil.Process] = []  # everything it started, for the checks and the clean-up

    @property
    def ports(self) -> tuple[int, int, int, int]:
        return self.nats_port, self.postgres_port, self.smtp_port, self.web_port

    def start(self) -> LocalStackRun:
        environment = {key: value for key, value in os.environ.items() if key not in CONFIGURED_ELSEWHERE}
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devstack.run",
                    "--var-dir",
                    str(self.var_dir),
                    "--nats-port",
                    str(self.nats_port),
                    "--postgres-port",
                    str(self.postgres_port),
                    "--smtp-port",
                    str(self.smtp_port),
                    "--web-port",
                    str(self.web_port),
                ],
                cwd=REPO,
                env={**environment, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as `make run` has in a terminal
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "READY" not in self.output():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come up:\n{self.output()[-4000:]}")
            time.sleep(0.2)
        self.seen = [psutil.Process(self.popen.pid), *psutil.Process(self.popen.pid).children(recursive=True)]
        return self

    def children(self) -> list[psutil.Process]:
        return self.seen[1:]

    def recorded_guardian_pid(self) -> int:
        record = msgspec.json.decode((self.var_dir / "stack.json").read_bytes())
        return record["guardian"]["pid"]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def clean_up(self) -> None:
        """Whatever a failed test left: killed by PID, psutil checking each is still the process we saw."""
        for process in self.seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if self.popen is not None:
            self.popen.wait()


class StackRuns:
    """The runs of one test, all on one var/ directory, as successive `make run`s in one checkout."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runs: list[LocalStackRun] = []

    def start(self, ports: tuple[int, int, int, int] | None = None) -> LocalStackRun:
        log_path = self.directory / f"run{len(self.runs)}.log"
        run = LocalStackRun(self.directory / "var", ports or (free_port(), free_port(), free_port(), free_port()), log_path)
        self.runs.append(run)
        return run.start()


@pytest.fixture
def stack_runs() -> Iterator[StackRuns]:
    # Not under pytest's tmp_path: another pytest session makes that 0700 again, and PostgreSQL,
    # run as an unprivileged user when we are root, could no longer reach its data directory.
    with scratch_dir("make-run") as directory:
        runs = StackRuns(directory)
        try:
            yield runs
        finally:
            for run in runs.runs:
                run.clean_up()


def assert_all_gone(processes: list[psutil.Process], within: float = STOP_TIMEOUT) -> None:
    survivors = still_alive_after(processes, within)
    assert not survivors, [f"{p.pid} {p.name()}" for p in survivors]


def assert_ports_free(run: LocalStackRun) -> None:
    assert [port for port in run.ports if not port_is_free(port)] == []


@pytest.mark.parametrize("stop_signal", [signal.SIGHUP, signal.SIGTERM], ids=["hangup", "terminate"])
def test_a_signal_to_the_process_group_stops_the_whole_stack_in_order(stack_runs: StackRuns, stop_signal: signal.Signals) -> None:
    run = stack_runs.start()
    children = run.children()
    assert len(children) >= 9  # guardian, NATS, postmaster (and its backends), SMTP sink, five services
    # Without PUBLIC_URL, links follow --web-port, on the host the edge is announced with (cookies live on one host).
    assert f"the edge (HTTP API and pages): http://localhost:{run.web_port}  PUBLIC_URL=http://localhost:{run.web_port}\n" in (
        run.output()
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while "sign in as the demo owner" not in run.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"one use, five minutes): http://localhost:{run.web_port}/session/local?" in run.output(), run.output()[-2000:]

    assert run.popen is not None
    os.killpg(run.popen.pid, stop_signal)  # what closing the terminal does, or `kill` of the group

    assert run.popen.wait(STOP_TIMEOUT) == 0, run.output()[-3000:]
    assert_all_gone(children)
    assert_ports_free(run)
    output = run.output()
    assert output.index("stopped membership") < output.index("stopped PostgresServer") < output.index("stopped NatsServer")
    assert not (run.var_dir / "stack.json").exists()


def test_a_supervisor_killed_outright_takes_every_child_with_it(stack_runs: StackRuns) -> None:
    run = stack_runs.start()
    children = run.children()
    assert run.popen is not None

    run.popen.kill()
    run.popen.wait()

    assert_all_gone(children)
    assert_ports_free(run)
    assert "is gone without stopping the stack" in (run.var_dir / "guardian.log").read_text()


def test_the_next_run_stops_a_stack_an_earlier_run_left_behind(stack_runs: StackRuns) -> None:
    earlier = stack_runs.start()
    left_behind = [p for p in earlier.children() if p.pid != earlier.recorded_guardian_pid()]
    assert earlier.popen is not None
    # Both the supervisor and its guardian die without a word: the servers and services stay.
    os.kill(earlier.recorded_guardian_pid(), signal.SIGKILL)
    earlier.popen.kill()
    earlier.popen.wait()
    assert not port_is_free(earlier.nats_port)

    later = stack_runs.start(ports=earlier.ports)

    assert "left a stack running" in later.output()
    assert_all_gone(left_behind, within=0)  # stopped before the new stack started
    assert all(process.is_running() for process in later.children())


def test_make_run_keeps_one_secret_for_its_owner_and_never_prints_it(stack_runs: StackRuns) -> None:
    first = stack_runs.start()
    secret_file = first.var_dir / "server-secret"
    secret = secret_file.read_text().strip()
    assert first.popen is not None
    first.popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.popen.wait(STOP_TIMEOUT) == 0

    second = stack_runs.start(ports=first.ports)

    assert secret_file.read_text().strip() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert secret_sources(second.output()) == {service: f"the file {secret_file} (SERVER_SECRET_FILE)" for service in SERVICES}
    assert secret not in first.output() + second.output()


def secret_sources(output: str) -> dict[str, str]:
    """What each service logged about where its secret came from."""
    sources = {}
    for line in output.splitlines():
        service, _, logged = line.partition(" | ")
        if "server secret loaded" in logged:
            sources[service.strip()] = json.loads(logged)["source"]
    return sources


def test_make_run_refuses_to_start_when_the_edges_port_is_taken(stack_runs: StackRuns) -> None:
    environment = {key: value for key, value in os.environ.items() if key not in (*CONFIGURED_ELSEWHERE, "WEB_PORT")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = ["--nats-port", str(free_port()), "--postgres-port", str(free_port()), "--smtp-port", str(free_port())]
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack.run",
                "--var-dir",
                str(stack_runs.directory / "var"),
                "--web-port",
                str(port),
                *others,
            ],
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"could not start: 127.0.0.1:{port} is in use" in refused.stdout
    assert "--web-port" in refused.stdout
    assert "NatsServer pid" not in refused.stdout  # refused before any server started
