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
machine's other load moves far less than a rate. Over NATS each call is measured twice: alone (the
issue's baseline) and after the same `authorize` the edge asks (the same bus work, so the ratio to it
is what HTTP and the edge's own code add).

Edges from other source trees (`BENCH_EDGE_BASELINE`, see bench/__main__.py) are measured in the
same run. Every way of making a call (over NATS, through each edge) runs in turn, three rounds with
the order rotated, so the shared machine's drift falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import msgspec
import psutil

from services.membership.domain.permissions import permissions_of
from teamctl.client import Client

from .http_load import HttpConnection
from .measure import Figure, Latencies

OWNER = {"type": "user", "id": "bench-owner"}
CLIENTS = 16
READS_PER_CLIENT = 300
INVITES_PER_CLIENT = 150
FLOOR_PER_CLIENT = 900
WARM_UP = 3
AUTHORIZED = "NATS after authorize"
ROUNDS = 3  # each way of calling measured in turn, three times over


@dataclass(frozen=True)
class BenchOrg:
    org_id: str
    api_key: str


@dataclass(frozen=True)
class EdgeUnderBench:
    label: str  # "edge" for this tree's; the baseline's names its tree
    base_url: str
    pid: int


@dataclass
class Tally:
    """One way of making a call (over NATS, through one edge), added up over the rounds."""

    requests: int = 0
    seconds: float = 0.0
    failures: int = 0
    latencies: Latencies = field(default_factory=Latencies)
    cpu_seconds: float | None = None  # the edge process's, when measured

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float | None:
        return None if self.cpu_seconds is None else 1e6 * self.cpu_seconds / self.requests


Operation = Callable[[int], Awaitable[bool]]


async def _set_up(client: Client, number: int, seats: int) -> BenchOrg:
    created = await client.command(
        "create_organization", name=f"Edge bench {number}", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    org_id = created["result"]["org_id"]
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


async def _concurrently(
    operations: list[Operation], per_client: int, tally: Tally | None = None, pid: int | None = None, first: int = 0
) -> Tally:
    """Each operation is one client's: called `per_client` times in turn, one at a time; all clients at once."""
    tally = tally if tally is not None else Tally()

    async def one_client(operation: Operation) -> int:
        failures = 0
        for i in range(first, first + per_client):
            started = time.perf_counter()
            failures += not await operation(i)
            tally.latencies.record(started)
        return failures

    process = psutil.Process(pid) if pid is not None else None
    cpu_before = sum(process.cpu_times()[:2]) if process else 0.0
    began = time.perf_counter()
    failures = await asyncio.gather(*(one_client(operation) for operation in operations))
    tally.seconds += time.perf_counter() - began
    tally.requests += len(operations) * per_client
    tally.failures += sum(failures)
    if process is not None:
        tally.cpu_seconds = (tally.cpu_seconds or 0.0) + sum(process.cpu_times()[:2]) - cpu_before
    return tally


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


def _nats_authorized_read(client: Client, org: BenchOrg) -> Operation:
    """The bus work of a read through the edge, without the edge: `authorize` the key, then the query."""

    async def read(_: int) -> bool:
        answer = await client.query("membership", "authorize", api_key=org.api_key, permission="members:read")
        if not answer["ok"] or answer["result"]["principal"] is None:
            return False
        return bool((await client.query("membership", "members", org_id=org.org_id))["ok"])

    return read


def _nats_authorized_invite(client: Client, org: BenchOrg) -> Operation:
    """The bus work of an invitation through the edge: `authorize` the key, then the command as the key."""

    async def invite(i: int) -> bool:
        answer = await client.query("membership", "authorize", api_key=org.api_key, permission="members:invite")
        if not answer["ok"] or answer["result"]["principal"] is None:
            return False
        actor = {"type": "api_key", "id": answer["result"]["principal"]["id"]}
        reply = await client.command("invite_member", org_id=org.org_id, actor=actor, email=f"key{i}@bench.io", role="developer")
        return bool(reply["ok"])

    return invite


def _nats_invite(client: Client, org: BenchOrg) -> Operation:
    async def invite(i: int) -> bool:
        reply = await client.command("invite_member", org_id=org.org_id, actor=OWNER, email=f"nats{i}@bench.io", role="developer")
        return bool(reply["ok"])

    return invite


async def _httpx_healthz_floor(base_url: str) -> Tally:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) for _ in range(CLIENTS)]

    def probe(http: httpx.AsyncClient) -> Operation:
        async def get(_: int) -> bool:
            return (await http.get("/healthz")).status_code == 200

        return get

    try:
        return await _concurrently([probe(http) for http in clients], READS_PER_CLIENT // ROUNDS)
    finally:
        for http in clients:
            await http.aclose()


async def _over_http(
    base_url: str,
    operations: Callable[[list[HttpConnection]], list[Operation]],
    per_client: int,
    tally: Tally,
    pid: int | None,
    first: int,
) -> None:
    """One round on fresh keep-alive connections (a server closes idle ones), warmed up by a few requests
    numbered past every round's own."""
    connections = [await HttpConnection.open(base_url) for _ in range(CLIENTS)]
    try:
        await _concurrently(operations(connections), WARM_UP, first=ROUNDS * per_client + first)
        await _concurrently(operations(connections), per_client, tally, pid, first)
    finally:
        for connection in connections:
            await connection.close()


Way = Callable[[Tally, int], Awaitable[None]]  # one round of one way of calling: (its tally, the round's first index)


async def _in_rounds(ways: dict[str, Way], per_round: int) -> dict[str, Tally]:
    """Every way in turn, ROUNDS times, the order rotated each round: the machine's drift (other work on
    its cores) spreads over all of them instead of favouring whichever ran in the quiet minute."""
    tallies = {name: Tally() for name in ways}
    names = list(ways)
    for round_number in range(ROUNDS):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            await ways[name](tallies[name], round_number * per_round)
    return tallies


async def edge_overhead(nats_url: str, edges: list[EdgeUnderBench], raw_url: str) -> list[Figure]:
    nats_clients = [await Client.connect(nats_url) for _ in range(CLIENTS)]
    seats = (2 + len(edges)) * (INVITES_PER_CLIENT + ROUNDS * WARM_UP)
    orgs = [await _set_up(client, n, seats) for n, client in enumerate(nats_clients)]
    keys = [{"Authorization": f"Bearer {org.api_key}"} for org in orgs]

    def reads(connections: list[HttpConnection]) -> list[Operation]:
        return [
            _getting(connection, f"/v1/orgs/{org.org_id}/members", key)
            for connection, org, key in zip(connections, orgs, keys, strict=True)
        ]

    def healthz(connections: list[HttpConnection]) -> list[Operation]:
        return [_getting(connection, "/healthz") for connection in connections]

    def bare(connections: list[HttpConnection]) -> list[Operation]:
        return [_getting(connection, "/") for connection in connections]

    def invites(label: str) -> Callable[[list[HttpConnection]], list[Operation]]:
        return lambda connections: [_inviting(connection, org, label) for connection, org in zip(connections, orgs, strict=True)]

    def over_http(
        url: str, operations: Callable[[list[HttpConnection]], list[Operation]], per_round: int, pid: int | None
    ) -> Way:
        return lambda tally, first: _over_http(url, operations, per_round, tally, pid, first)

    def over_nats(operation: Callable[[Client, BenchOrg], Operation], per_round: int) -> Way:
        async def run(tally: Tally, first: int) -> None:
            operations = [operation(client, org) for client, org in zip(nats_clients, orgs, strict=True)]
            await _concurrently(operations, per_round, tally, first=first)

        return run

    floor, reads_per_round, invites_per_round = (
        FLOOR_PER_CLIENT // ROUNDS,
        READS_PER_CLIENT // ROUNDS,
        INVITES_PER_CLIENT // ROUNDS,
    )
    try:
        floors = await _in_rounds(
            {
                "ceiling": over_http(raw_url, bare, floor, None),
                **{edge.label: over_http(edge.base_url, healthz, floor, edge.pid) for edge in edges},
            },
            floor,
        )
        figures = [_figure(f"HTTP client ceiling: GET from a bare responder, {CLIENTS}", floors.pop("ceiling"), "reqs/s")]
        figures += [_figure(f"GET /healthz through the {label} (no bus)", tally, "reqs/s") for label, tally in floors.items()]
        httpx_floor = await _httpx_healthz_floor(edges[0].base_url)
        figures.append(_figure(f"GET /healthz through the {edges[0].label}, httpx clients", httpx_floor, "reqs/s"))

        read_ways = {edge.label: over_http(edge.base_url, reads, reads_per_round, edge.pid) for edge in edges}
        read = await _in_rounds(
            {
                "NATS": over_nats(_nats_read, reads_per_round),
                AUTHORIZED: over_nats(_nats_authorized_read, reads_per_round),
                **read_ways,
            },
            reads_per_round,
        )
        figures += _compared("GET /v1/orgs/{org}/members", "membership.query.members", read, "reads/s")

        invite_ways = {
            edge.label: over_http(edge.base_url, invites(f"e{n}-"), invites_per_round, edge.pid) for n, edge in enumerate(edges)
        }
        invite = await _in_rounds(
            {
                "NATS": over_nats(_nats_invite, invites_per_round),
                AUTHORIZED: over_nats(_nats_authorized_invite, invites_per_round),
                **invite_ways,
            },
            invites_per_round,
        )
        figures += _compared("POST /v1/orgs/{org}/invitations", "membership.cmd.invite_member", invite, "cmds/s")
    finally:
        for client in nats_clients:
            await client.close()
    return figures


def _figure(name: str, tally: Tally, unit: str) -> Figure:
    cpu = "" if tally.cpu_us is None else f", edge CPU {tally.cpu_us:,.0f} µs/req"
    latency = f"p50 {tally.latencies.percentile(50):.1f} ms, p99 {tally.latencies.percentile(99):.1f} ms"
    return Figure(name, tally.rate, unit, f"{latency}{cpu} ({tally.failures} failed)")


def _compared(route: str, subject: str, tallies: dict[str, Tally], unit: str) -> list[Figure]:
    over_nats, authorized = tallies.pop("NATS"), tallies.pop(AUTHORIZED)
    figures = [
        _figure(f"{subject} over NATS, {CLIENTS} clients", over_nats, unit),
        _figure("  the same after `authorize`, over NATS", authorized, unit),
    ]
    for label, tally in tallies.items():
        figures.append(_figure(f"{route} through the {label}", tally, unit))
        figures.append(Figure(f"  {label} rate / NATS rate", tally.rate / over_nats.rate, "x"))
        figures.append(Figure(f"  {label} rate / NATS rate after `authorize`", tally.rate / authorized.rate, "x"))
    return figures
