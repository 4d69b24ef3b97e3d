"""Servers and services for a benchmark run: scratch directories, free ports, stopped afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack import NatsServer, PostgresServer, free_port
from tests.services_under_test import ServiceUnderTest


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
    scratch = Path(tempfile.mkdtemp(prefix="team-members-bench-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        nats = NatsServer(scratch / "nats", free_port())
        nats.start()
        stack.callback(nats.stop)
        postgres = PostgresServer(scratch / "pg", free_port())
        postgres.start()
        stack.callback(postgres.stop)
        yield BenchStack(nats, postgres, scratch)
