"""Session-wide real servers, started only when a test asks for one."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import NatsServer, PostgresServer, SmtpSink
from tests.servers import (
    nats_server_in_scratch_dir,
    postgres_server_in_scratch_dir,
    restart_if_down,
    smtp_sink_in_scratch_dir,
    unique_database_name,
)

TIER_OF_DIRECTORY = {"unit": "unit", "integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test in tests/<tier>/ carries the marker of its tier, so `-m unit` selects by directory."""
    tests_root = Path(__file__).parent
    for item in items:
        relative = Path(item.path).relative_to(tests_root)
        tier = TIER_OF_DIRECTORY.get(relative.parts[0]) if len(relative.parts) > 1 else None
        if tier:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    with nats_server_in_scratch_dir() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres_server_in_scratch_dir() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    with smtp_sink_in_scratch_dir() as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    restart_if_down(nats_server)
    return nats_server.url


@pytest.fixture
def database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own for each test, dropped afterwards."""
    restart_if_down(postgres_server)
    name = unique_database_name(request.node.name)
    postgres_server.create_database(name)
    yield postgres_server.dsn(name)
    if postgres_server.is_running():
        postgres_server.drop_database(name)
