"""The HTTP edge as a real process on the real stack (NATS, PostgreSQL, membership, billing, audit),
shared by a test module: starting five processes per test would cost more than the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import pytest

from devstack import NatsServer, PostgresServer
from devstack.ports import free_port
from shared.contract.common import PERMISSIONS
from teamctl.client import Client
from tests.servers import fresh_server_secret, restart_if_down, unique_database_name
from tests.services_under_test import running_service

T = TypeVar("T")


def blocking(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from sync code (a thread of its own, so any running loop is left alone)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work()).result()  # type: ignore[arg-type]


@dataclass
class Org:
    org_id: str
    owner_id: str
    owner_email: str
    owner_key: str  # a key the owner owns, with every permission: acts as the owner would

    @property
    def as_owner(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.owner_key}"}


@dataclass
class EdgeStack:
    base_url: str
    nats_url: str
    server_secret: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=15.0)

    def bus(self, name: str, /, **fields: Any) -> dict[str, Any]:
        """A command (`name`) or query (`service.query`) straight over NATS, as a platform service sends it."""

        async def send() -> dict[str, Any]:
            client = await Client.connect(self.nats_url)
            try:
                if "." in name:
                    service, query = name.split(".", 1)
                    return await client.query(service, query, **fields)
                return await client.command(name, **fields)
            finally:
                await client.close()

        return blocking(send)

    def new_org(self, name: str = "Acme", plan: str = "pro", owner_id: str = "owner-1") -> Org:
        email = f"{owner_id}@{name.lower()}.example"
        created = self.bus("create_organization", name=name, plan=plan, owner={"user_id": owner_id, "email": email})
        assert created["ok"], created
        org_id = created["result"]["org_id"]
        return Org(org_id, owner_id, email, self.new_key(org_id, list(PERMISSIONS), owner_user_id=owner_id))

    def new_key(self, org_id: str, permissions: list[str], owner_user_id: str | None = None) -> str:
        made = self.bus("create_api_key", org_id=org_id, name="test key", permissions=permissions, owner_user_id=owner_user_id)
        assert made["ok"], made
        return str(made["result"]["secret"])


async def _delete_every_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            await js.delete_stream(stream.config.name)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def edge_stack(
    nats_server: NatsServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeStack]:
    restart_if_down(nats_server)
    restart_if_down(postgres_server)
    blocking(lambda: _delete_every_stream(nats_server.url))
    database = unique_database_name("web_edge")
    postgres_server.create_database(database)
    port = free_port()
    env = {
        "NATS_URL": nats_server.url,
        "DATABASE_URL": postgres_server.dsn(database),
        "SERVER_SECRET": fresh_server_secret(),
        "LOG_LEVEL": "info",
        "WEB_HOST": "127.0.0.1",
        "WEB_PORT": str(port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    logs: Path = tmp_path_factory.mktemp("edge_stack")
    try:
        with ExitStack() as services:
            for name in ("membership", "billing", "audit", "web"):
                services.enter_context(running_service(name, env, logs))
            yield EdgeStack(f"http://127.0.0.1:{port}", nats_server.url, env["SERVER_SECRET"])
    finally:
        if postgres_server.is_running():
            postgres_server.drop_database(database)
