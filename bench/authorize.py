"""`authorize`: over NATS beside a bare echo responder (same client, same concurrency), the embedded
authorizer's checks per second in one process, and revocation propagation to its replica."""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
import nats

from authorizer import Authorizer
from shared import subjects
from teamctl.client import Client

from .measure import Figure, Latencies

OWNER = {"type": "user", "id": "bench-owner"}
ECHO_SUBJECT = "bench.echo"


async def _load(nats_url: str, subject: str, body: bytes, clients: int, seconds: float) -> tuple[float, Latencies]:
    connections = [await nats.connect(nats_url) for _ in range(clients)]
    latencies = Latencies()
    done = 0
    stop_at = time.perf_counter() + seconds

    async def client(nc: nats.NATS) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await nc.request(subject, body, timeout=10)
            latencies.record(started)
            done += 1

    began = time.perf_counter()
    try:
        await asyncio.gather(*(client(c) for c in connections))
    finally:
        for c in connections:
            await c.close()
    return done / (time.perf_counter() - began), latencies


async def _echo(nats_url: str) -> nats.NATS:
    nc = await nats.connect(nats_url)

    async def answer(message) -> None:
        await message.respond(message.data)

    await nc.subscribe(ECHO_SUBJECT, cb=answer)
    return nc


async def _org_and_key(client: Client) -> tuple[str, str]:
    created = await client.command(
        "create_organization", name="Bench", plan="pro", owner={"user_id": "bench-owner", "email": "o@bench.io"}
    )
    org_id = created["result"]["org_id"]
    key = await client.command("create_api_key", org_id=org_id, actor=OWNER, name="gw", permissions=["gateway:use"])
    assert key["ok"], key
    return org_id, key["result"]["secret"]


async def authorize_figures(nats_url: str, clients: int = 32, seconds: float = 8.0, revocations: int = 100) -> list[Figure]:
    client = await Client.connect(nats_url)
    echo = await _echo(nats_url)
    try:
        org_id, secret = await _org_and_key(client)
        body = msgspec.json.encode({"api_key": secret, "permission": "gateway:use"})
        echo_rate, echo_lat = await _load(nats_url, ECHO_SUBJECT, body, clients, seconds)
        auth_rate, auth_lat = await _load(nats_url, subjects.query("membership", "authorize"), body, clients, seconds)
        figures = [
            Figure(f"echo responder, {clients} clients", echo_rate, "req/s", f"p50 {echo_lat.percentile(50):.1f} ms"),
            Figure("  echo latency p99", echo_lat.percentile(99), "ms"),
            Figure(
                f"authorize over NATS (API key), {clients} clients", auth_rate, "req/s", f"p50 {auth_lat.percentile(50):.1f} ms"
            ),
            Figure("  authorize latency p99", auth_lat.percentile(99), "ms"),
            Figure("  authorize rate, share of echo (target >= 80%)", 100 * auth_rate / echo_rate, "%"),
            Figure("  authorize p99 / echo p99 (target <= 2)", auth_lat.percentile(99) / echo_lat.percentile(99), "x"),
        ]
        figures += await _embedded(client, nats_url, org_id, secret, revocations)
        return figures
    finally:
        await echo.close()
        await client.close()


async def _embedded(client: Client, nats_url: str, org_id: str, secret: str, revocations: int) -> list[Figure]:
    nc = await nats.connect(nats_url)
    authz = None
    try:
        deadline = time.monotonic() + 15
        while authz is None or not authz.check_key(secret, "gateway:use").allowed:
            if authz is not None:
                await authz.stop()
            with contextlib.suppress(Exception):
                authz = await Authorizer.start(nc)
            if time.monotonic() > deadline:
                raise RuntimeError("the access bucket never answered")
            await asyncio.sleep(0.1)
        checks = 400_000
        began = time.perf_counter()
        check = authz.check_key
        for _ in range(checks):
            check(secret, "gateway:use")
        rate = checks / (time.perf_counter() - began)

        propagation = Latencies()
        for n in range(revocations):
            key = await client.command("create_api_key", org_id=org_id, actor=OWNER, name=f"r{n}", permissions=["gateway:use"])
            fresh = key["result"]["secret"]
            while not authz.check_key(fresh, "gateway:use").allowed:  # noqa: ASYNC110 - polling is what a gateway sees
                await asyncio.sleep(0.0005)
            revoked = await client.command("revoke_api_key", org_id=org_id, actor=OWNER, key_id=key["result"]["key_id"])
            assert revoked["ok"], revoked
            replied = time.perf_counter()
            while authz.check_key(fresh, "gateway:use").allowed:  # noqa: ASYNC110 - polling is what a gateway sees
                await asyncio.sleep(0.0005)
            propagation.record(replied)
        return [
            Figure("embedded authorizer, checks in one process", rate, "checks/s", "(target >= 200,000)"),
            Figure("revocation: reply to replica denying, p50", propagation.percentile(50), "ms"),
            Figure("revocation: reply to replica denying, p99", propagation.percentile(99), "ms", "(target <= 100)"),
            Figure("  replica staleness at the end", authz.staleness() * 1000, "ms"),
        ]
    finally:
        if authz is not None:
            await authz.stop()
        await nc.close()
