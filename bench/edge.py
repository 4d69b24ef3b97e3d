"""The HTTP edge's overhead: the same query and command through the edge (httpx, an API key) and
straight over NATS, from the same number of concurrent clients, in one run on one stack.

The HTTP floor, `GET /healthz` (no bus), is measured too: the share of the cost that is HTTP itself,
httpx in this process included.

Each client has an organization of its own (seats bought first, so no invitation buys one). Through
the edge, a members read is `authorize` twice (who the key is, then the permission the read needs)
and the query; an invitation is one `authorize` and the command. Those round trips are the edge's
work, so they are counted in its figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from services.membership.domain.permissions import permissions_of
from teamctl.client import Client

from .measure import Figure, Latencies

OWNER = {"type": "user", "id": "bench-owner"}
CLIENTS = 16
READS_PER_CLIENT = 300
INVITES_PER_CLIENT = 150


@dataclass(frozen=True)
class BenchOrg:
    org_id: str
    api_key: str


@dataclass(frozen=True)
class Run:
    rate: float
    p50: float
    p99: float
    failures: int


async def _set_up(client: Client, number: int) -> BenchOrg:
    created = await client.command(
        "create_organization", name=f"Edge bench {number}", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    org_id = created["result"]["org_id"]
    seats = 2 * INVITES_PER_CLIENT
    bought = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=seats, accept_charge_cents=10**9)
    assert bought["ok"], bought
    key = await client.command(
        "create_api_key",
        org_id=org_id,
        actor=OWNER,
        name="bench",
        permissions=[*sorted(permissions_of("developer")), "members:invite"],
    )
    assert key["ok"], key
    return BenchOrg(org_id, key["result"]["secret"])


async def _concurrently(operations: list[Callable[[int], Awaitable[bool]]], per_client: int) -> Run:
    """Each operation is one client's: called `per_client` times in turn, one at a time; all clients at once."""
    latencies = Latencies()

    async def one_client(operation: Callable[[int], Awaitable[bool]]) -> int:
        failures = 0
        for i in range(per_client):
            started = time.perf_counter()
            failures += not await operation(i)
            latencies.record(started)
        return failures

    began = time.perf_counter()
    failures = await asyncio.gather(*(one_client(operation) for operation in operations))
    elapsed = time.perf_counter() - began
    return Run(len(operations) * per_client / elapsed, latencies.percentile(50), latencies.percentile(99), sum(failures))


async def edge_overhead(nats_url: str, edge_url: str) -> list[Figure]:
    connections = [await Client.connect(nats_url) for _ in range(CLIENTS)]
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    orgs = [await _set_up(connection, n) for n, connection in enumerate(connections)]
    https = [
        httpx.AsyncClient(base_url=edge_url, headers={"Authorization": f"Bearer {org.api_key}"}, limits=limits, timeout=30)
        for org in orgs
    ]
    try:

        def nats_read(client: Client, org: BenchOrg) -> Callable[[int], Awaitable[bool]]:
            async def read(_: int) -> bool:
                return (await client.query("membership", "members", org_id=org.org_id))["ok"]

            return read

        def http_read(http: httpx.AsyncClient, org: BenchOrg) -> Callable[[int], Awaitable[bool]]:
            async def read(_: int) -> bool:
                return (await http.get(f"/v1/orgs/{org.org_id}/members")).status_code == 200

            return read

        def nats_invite(client: Client, org: BenchOrg) -> Callable[[int], Awaitable[bool]]:
            async def invite(i: int) -> bool:
                reply = await client.command(
                    "invite_member", org_id=org.org_id, actor=OWNER, email=f"nats{i}@bench.io", role="developer"
                )
                return reply["ok"]

            return invite

        def http_invite(http: httpx.AsyncClient, org: BenchOrg) -> Callable[[int], Awaitable[bool]]:
            async def invite(i: int) -> bool:
                body = {"email": f"http{i}@bench.io", "role": "developer"}
                return (await http.post(f"/v1/orgs/{org.org_id}/invitations", json=body)).status_code == 201

            return invite

        def healthz(http: httpx.AsyncClient) -> Callable[[int], Awaitable[bool]]:
            async def probe(_: int) -> bool:
                return (await http.get("/healthz")).status_code == 200

            return probe

        pairs = list(zip(connections, https, orgs, strict=True))
        await _concurrently([http_read(h, o) for _, h, o in pairs], 10)  # warm-up: connections, caches
        floor = await _concurrently([healthz(h) for h in https], READS_PER_CLIENT)
        read_nats = await _concurrently([nats_read(c, o) for c, _, o in pairs], READS_PER_CLIENT)
        read_http = await _concurrently([http_read(h, o) for _, h, o in pairs], READS_PER_CLIENT)
        invite_nats = await _concurrently([nats_invite(c, o) for c, _, o in pairs], INVITES_PER_CLIENT)
        invite_http = await _concurrently([http_invite(h, o) for _, h, o in pairs], INVITES_PER_CLIENT)
    finally:
        for http in https:
            await http.aclose()
        for connection in connections:
            await connection.close()
    return [
        Figure(f"GET /healthz through the edge (no bus), {CLIENTS} clients", floor.rate, "reqs/s", f"p50 {floor.p50:.1f} ms"),
        *_compared("GET /v1/orgs/{org}/members", "membership.query.members", read_nats, read_http, "reads/s"),
        *_compared("POST /v1/orgs/{org}/invitations", "membership.cmd.invite_member", invite_nats, invite_http, "cmds/s"),
    ]


def _compared(route: str, subject: str, over_nats: Run, through_edge: Run, unit: str) -> list[Figure]:
    return [
        Figure(f"{subject} over NATS, {CLIENTS} clients", over_nats.rate, unit, f"({over_nats.failures} failed)"),
        Figure(f"{route} through the edge", through_edge.rate, unit, f"({through_edge.failures} failed)"),
        Figure("  edge rate / NATS rate", through_edge.rate / over_nats.rate, "x"),
        Figure("  p50 over NATS / through the edge", over_nats.p50, "ms", f"/ {through_edge.p50:.1f} ms"),
        Figure("  p99 over NATS / through the edge", over_nats.p99, "ms", f"/ {through_edge.p99:.1f} ms"),
    ]
