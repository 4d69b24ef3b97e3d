"""Fixtures for tests that run services as processes against real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from tests.integration.web_edge import edge_stack  # noqa: F401  (the HTTP edge on the real stack, per module)
from tests.servers import fresh_server_secret
from tests.services_under_test import ServiceUnderTest, running_service


async def _delete_every_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            await js.delete_stream(stream.config.name)
    finally:
        await nc.close()


@pytest.fixture
async def clean_nats(nats_url: str) -> str:
    """The session's NATS server with no stream left from an earlier test."""
    await _delete_every_stream(nats_url)
    return nats_url


@pytest.fixture
def service_env(clean_nats: str, database_url: str) -> dict[str, str]:
    return {
        "NATS_URL": clean_nats,
        "DATABASE_URL": database_url,
        "SERVER_SECRET": fresh_server_secret(),
        "LOG_LEVEL": "info",
    }


@pytest.fixture
def membership(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceUnderTest]:
    with running_service("membership", service_env, tmp_path) as service:
        yield service


@pytest.fixture
async def nc(clean_nats: str) -> AsyncIterator[nats.NATS]:
    connection = await nats.connect(clean_nats)
    yield connection
    await connection.close()


@pytest.fixture
def billing(service_env: dict[str, str], tmp_path: Path, membership: ServiceUnderTest) -> Iterator[ServiceUnderTest]:
    with running_service("billing", service_env, tmp_path) as service:
        yield service


@pytest.fixture
def audit(service_env: dict[str, str], tmp_path: Path, membership: ServiceUnderTest) -> Iterator[ServiceUnderTest]:
    with running_service("audit", service_env, tmp_path) as service:
        yield service


@pytest.fixture
def web(service_env: dict[str, str], tmp_path: Path, membership: ServiceUnderTest) -> Iterator[ServiceUnderTest]:
    """The HTTP edge on a free port (its `base_url`), in front of membership."""
    with running_service("web", service_env, tmp_path) as service:
        yield service
