"""A small NATS client of the contract, for the CLI, tests and benchmarks."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import nats

from shared import subjects
from shared.bus import connect

SYSTEM_ACTOR = {"type": "system", "id": "platform"}


class Client:
    def __init__(self, nc: nats.NATS, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    @classmethod
    async def connect(cls, nats_url: str, timeout: float = 10.0) -> Client:
        return cls(await connect(nats_url), timeout)

    async def close(self) -> None:
        await self.nc.close()

    async def request(self, subject: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
        payload = body if isinstance(body, bytes) else msgspec.json.encode(body)
        reply = await self.nc.request(subject, payload, timeout=self.timeout)
        return msgspec.json.decode(reply.data)

    async def command(self, command_name: str, /, **fields: Any) -> dict[str, Any]:
        """Sends `membership.cmd.<name>`; a fresh `command_id` and the system actor unless given."""
        body = {"command_id": f"cmd_{uuid.uuid4().hex}", "actor": SYSTEM_ACTOR, **fields}
        return await self.request(subjects.command(command_name), body)

    async def query_subject(self, subject: str, timeout: float = 2.0) -> dict[str, Any]:
        """A short request with an empty body, whatever the client's own timeout."""
        reply = await self.nc.request(subject, b"{}", timeout=timeout)
        return msgspec.json.decode(reply.data)

    async def query(self, service: str, query_name: str, /, **fields: Any) -> dict[str, Any]:
        return await self.request(subjects.query(service, query_name), fields)
