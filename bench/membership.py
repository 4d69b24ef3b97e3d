"""invite_member over NATS from concurrent clients against a running membership service."""

from __future__ import annotations

import asyncio
import time

from teamctl.client import Client

from .measure import Figure, Latencies

OWNER = {"type": "user", "id": "bench-owner"}


async def _client_run(client: Client, number: int, invites: int, latencies: Latencies, buy_seats_first: bool) -> int:
    created = await client.command(
        "create_organization", name=f"Bench {number}", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    org_id = created["result"]["org_id"]
    if buy_seats_first:
        bought = await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=invites, accept_charge_cents=10**9)
        assert bought["ok"], bought
    failures = 0
    for i in range(invites):
        started = time.perf_counter()
        # Without seats bought first, an invitation past the included seats buys one (SeatAdded, then MemberInvited).
        extra = {} if buy_seats_first else {"accept_charge_cents": 10**9}
        reply = await client.command(
            "invite_member", org_id=org_id, actor=OWNER, email=f"m{i}@c{number}.io", role="developer", **extra
        )
        latencies.record(started)
        failures += not reply["ok"]
    return failures


async def invite_throughput(
    nats_url: str, clients: int = 16, invites_per_client: int = 400, buy_seats_first: bool = True
) -> list[Figure]:
    """`clients` connections, each inviting into an organization of its own, one command at a time."""
    connections = [await Client.connect(nats_url) for _ in range(clients)]
    latencies = Latencies()
    try:
        started = time.perf_counter()
        failures = await asyncio.gather(
            *(_client_run(c, n, invites_per_client, latencies, buy_seats_first) for n, c in enumerate(connections))
        )
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            await connection.close()
    total = clients * invites_per_client
    return [
        Figure(f"invite_member, {clients} concurrent clients", total / elapsed, "cmds/s", f"({sum(failures)} failed)"),
        Figure("invite_member latency p50", latencies.percentile(50), "ms"),
        Figure("invite_member latency p99", latencies.percentile(99), "ms"),
    ]
