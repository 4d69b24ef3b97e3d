"""The HTTP edge's overhead: the same query and command through the edge (an API key) and straight
over NATS, from the same number of concurrent clients, in one run on one stack.

The HTTP side is driven by `bench.http_load` (a keep-alive client that costs little per request), and
two floors are measured in the same run: that client against `bench.raw_http` (a responder doing no
work: the most any server can show here) and `GET /healthz` through the edge (HTTP and Litestar, no
bus). `GET /healthz` through httpx, the client this benchmark used before, is kept for comparison.

Each client has an organization of its own (seats bought first, so no invitation buys one). Through
the edge, a members read is one `authorize` (who the key is and what it may do) and the query; an
invitation, one `authorize` and the command. Those round trips are the edge's work, so they are
counted in its figures; so is the edge process's CPU per request (user + system), a figure the
machine's other load moves far less than a rate.

A second edge from another source tree (`BENCH_EDGE_BASELINE`, see bench/__main__.py) is measured in
the same run, each workload through it right after the same through this tree's edge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import msgspec
import psutil

from teamctl.client import Client

from .http_load import HttpConnection
from .measure import Figure, Latencies

OWNER = {"type": "user", "id": "bench-owner"}
CLIENTS = 16
READS_PER_CLIENT = 300
INVITES_PER_CLIENT = 150
FLOOR_PER_CLIENT = 1000
WARM_UP = 3


@dataclass(frozen=True)
class BenchOrg:
    org_id: str
    api_key: str


@dataclass(frozen=True)
class EdgeUnderBench:
    label: str  # "edge" for this tree's; the baseline's names its tree
    base_url: str
    pid: int


@dataclass(frozen=True)
class Run:
    rate: float
    p50: float
    p99: float
    failures: int
    cpu_us: float = float("nan")  # the edge process's CPU per request, when measured


Operation = Callable[[int], Awaitable[bool]]


async def _set_up(client: Client, number: int, seats: int) -> BenchOrg:
    created = await client.command(
        "create_organization", name=f"Edge bench {number}", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    org_id = created["result"]["org_id"]
    bought = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=seats, accept_charge_cents=10**9)
    assert bought["ok"], bought
    key = await client.command(
        "create_api_key", org_id=org_id, actor=OWNER, name="bench", permissions=["members:read", "members:invite"]
    )
    assert key["ok"], key
    return BenchOrg(org_id, key["result"]["secret"])


async def _concurrently(operations: list[Operation], per_client: int, pid: int | None = None, first: int = 0) -> Run:
    """Each operation is one client's: called `per_client` times in turn, one at a time; all clients at once."""
    latencies = Latencies()

    async def one_client(operation: Operation) -> int:
        failures = 0
        for i in range(first, first + per_client):
            started = time.perf_counter()
            failures += not await operation(i)
            latencies.record(started)
        return failures

    process = psutil.Process(pid) if pid is not None else None
    cpu_before = sum(process.cpu_times()[:2]) if process else 0.0
    began = time.perf_counter()
    failures = await asyncio.gather(*(one_client(operation) for operation in operations))
    elapsed = time.perf_counter() - began
    requests = len(operations) * per_client
    cpu_us = 1e6 * (sum(process.cpu_times()[:2]) - cpu_before) / requests if process else float("nan")
    return Run(requests / elapsed, latencies.percentile(50), latencies.percentile(99), sum(failures), cpu_us)


def _getting(connection: HttpConnection, path: str, headers: dict[str, str] | None = None) -> Operation:
    request = connection.request("GET", path, headers)

    async def get(_: int) -> bool:
        return (await connection.send(request))[0] == 200

    return get


def _inviting(connection: HttpConnection, org: BenchOrg, label: str) -> Operation:
    path, headers = f"/v1/orgs/{org.org_id}/invitations", {"Authorization": f"Bearer {org.api_key}"}
    headers["Content-Type"] = "application/json"

    async def invite(i: int) -> bool:
        body = msgspec.json.encode({"email": f"{label}{i}@bench.io", "role": "developer"})
        return (await connection.send(connection.request("POST", path, headers, body)))[0] == 201

    return invite


def _nats_read(client: Client, org: BenchOrg) -> Operation:
    async def read(_: int) -> bool:
        return bool((await client.query("membership", "members", org_id=org.org_id))["ok"])

    return read


def _nats_invite(client: Client, org: BenchOrg) -> Operation:
    async def invite(i: int) -> bool:
        reply = await client.command("invite_member", org_id=org.org_id, actor=OWNER, email=f"nats{i}@bench.io", role="developer")
        return bool(reply["ok"])

    return invite


async def _httpx_healthz_floor(base_url: str) -> Run:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) for _ in range(CLIENTS)]

    def probe(http: httpx.AsyncClient) -> Operation:
        async def get(_: int) -> bool:
            return (await http.get("/healthz")).status_code == 200

        return get

    try:
        return await _concurrently([probe(http) for http in clients], READS_PER_CLIENT)
    finally:
        for http in clients:
            await http.aclose()


async def _over_http(
    base_url: str, operations: Callable[[list[HttpConnection]], list[Operation]], per_client: int, pid: int | None = None
) -> Run:
    """A run on fresh keep-alive connections (a server closes idle ones), a few requests each first to warm up."""
    connections = [await HttpConnection.open(base_url) for _ in range(CLIENTS)]
    try:
        await _concurrently(operations(connections), WARM_UP, first=per_client)  # numbered past the run's own
        return await _concurrently(operations(connections), per_client, pid)
    finally:
        for connection in connections:
            await connection.close()


async def edge_overhead(nats_url: str, edges: list[EdgeUnderBench], raw_url: str) -> list[Figure]:
    nats_clients = [await Client.connect(nats_url) for _ in range(CLIENTS)]
    orgs = [await _set_up(client, n, (1 + len(edges)) * (INVITES_PER_CLIENT + WARM_UP)) for n, client in enumerate(nats_clients)]
    keys = [{"Authorization": f"Bearer {org.api_key}"} for org in orgs]

    def reads(connections: list[HttpConnection]) -> list[Operation]:
        return [
            _getting(connection, f"/v1/orgs/{org.org_id}/members", key)
            for connection, org, key in zip(connections, orgs, keys, strict=True)
        ]

    def healthz(connections: list[HttpConnection]) -> list[Operation]:
        return [_getting(connection, "/healthz") for connection in connections]

    def invites(label: str) -> Callable[[list[HttpConnection]], list[Operation]]:
        return lambda connections: [_inviting(connection, org, label) for connection, org in zip(connections, orgs, strict=True)]

    try:
        ceiling = await _over_http(raw_url, lambda cs: [_getting(c, "/") for c in cs], FLOOR_PER_CLIENT)
        figures = [_figure(f"HTTP client ceiling: GET from a bare responder, {CLIENTS}", ceiling, "reqs/s")]
        for edge in edges:
            floor = await _over_http(edge.base_url, healthz, FLOOR_PER_CLIENT, edge.pid)
            figures.append(_figure(f"GET /healthz through the {edge.label} (no bus)", floor, "reqs/s"))
        httpx_floor = await _httpx_healthz_floor(edges[0].base_url)
        figures.append(_figure(f"GET /healthz through the {edges[0].label}, httpx clients", httpx_floor, "reqs/s"))

        read_nats = await _concurrently([_nats_read(c, o) for c, o in zip(nats_clients, orgs, strict=True)], READS_PER_CLIENT)
        read_http = {edge.label: await _over_http(edge.base_url, reads, READS_PER_CLIENT, edge.pid) for edge in edges}
        figures += _compared("GET /v1/orgs/{org}/members", "membership.query.members", read_nats, read_http, "reads/s")

        invite_nats = await _concurrently(
            [_nats_invite(c, o) for c, o in zip(nats_clients, orgs, strict=True)], INVITES_PER_CLIENT
        )
        invite_http = {
            edge.label: await _over_http(edge.base_url, invites(f"e{n}-"), INVITES_PER_CLIENT, edge.pid)
            for n, edge in enumerate(edges)
        }
        figures += _compared(
            "POST /v1/orgs/{org}/invitations", "membership.cmd.invite_member", invite_nats, invite_http, "cmds/s"
        )
    finally:
        for client in nats_clients:
            await client.close()
    return figures


def _figure(name: str, run: Run, unit: str) -> Figure:
    cpu = "" if run.cpu_us != run.cpu_us else f", edge CPU {run.cpu_us:,.0f} µs/req"  # NaN: not measured
    return Figure(name, run.rate, unit, f"p50 {run.p50:.1f} ms, p99 {run.p99:.1f} ms{cpu} ({run.failures} failed)")


def _compared(route: str, subject: str, over_nats: Run, through: dict[str, Run], unit: str) -> list[Figure]:
    figures = [_figure(f"{subject} over NATS, {CLIENTS} clients", over_nats, unit)]
    for label, run in through.items():
        figures.append(_figure(f"{route} through the {label}", run, unit))
        figures.append(Figure(f"  {label} rate / NATS rate", run.rate / over_nats.rate, "x"))
    return figures
