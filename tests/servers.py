"""Real servers for tests: in temporary directories, on free ports, always stopped."""

import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from devstack import NatsServer, PostgresServer, SmtpSink, free_port


class Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


@contextmanager
def scratch_dir(purpose: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"team-members-{purpose}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running(server: S) -> Iterator[S]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def nats_server_in_scratch_dir() -> Iterator[NatsServer]:
    with scratch_dir("nats") as path, running(NatsServer(path / "data", free_port())) as server:
        yield server


@contextmanager
def postgres_server_in_scratch_dir() -> Iterator[PostgresServer]:
    with scratch_dir("pg") as path, running(PostgresServer(path / "data", free_port())) as server:
        yield server


@contextmanager
def smtp_sink_in_scratch_dir() -> Iterator[SmtpSink]:
    with scratch_dir("mail") as path, running(SmtpSink(path / "mail", free_port())) as server:
        yield server


def restart_if_down(server: NatsServer | PostgresServer | SmtpSink) -> None:
    """A test may crash a shared server on purpose; the next one gets it back on the same data."""
    if not server.is_running():
        server.start()


def fresh_server_secret() -> str:
    """A SERVER_SECRET of the test's own: the code has no default, and no test should share one."""
    return secrets.token_urlsafe(48)


def unique_database_name(test_name: str) -> str:
    readable = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:40]
    return f"test_{readable}_{uuid.uuid4().hex[:8]}"
