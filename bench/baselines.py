"""The machine's own baselines, measured in the same run as the project's figures."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
from nats.js.api import StorageType, StreamConfig

from .measure import Figure


async def asyncpg_commit_rate(database_url: str, seconds: float = 3.0) -> Figure:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, body text)")
        count, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            await connection.execute("INSERT INTO bench_commits (body) VALUES ($1)", "x")
            count += 1
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return Figure("baseline: asyncpg single-row commit, 1 connection", count / elapsed, "commits/s")


async def jetstream_publish_rate(nats_url: str, messages: int = 50_000) -> Figure:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BENCH_BASELINE", subjects=["bench.baseline"], storage=StorageType.FILE))
        payload = b"x" * 300
        started = time.perf_counter()
        for offset in range(0, messages, 1000):
            acks = [await js.publish_async("bench.baseline", payload) for _ in range(min(1000, messages - offset))]
            await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
        await js.delete_stream("BENCH_BASELINE")
    finally:
        await nc.close()
    return Figure("baseline: JetStream async publish, file, R1", messages / elapsed, "msgs/s")


async def asyncpg_batched_insert_rate(database_url: str, rows: int = 100_000, batch: int = 1000) -> list[Figure]:
    """Small rows in batches of `batch`, one transaction per batch: by COPY, then by executemany."""
    anchor = datetime(2025, 1, 1, tzinfo=UTC)
    records = [(f"org_{i % 1000:04d}", "seat_proration", 1, 1000, anchor + timedelta(milliseconds=i)) for i in range(rows)]
    columns = ("org_id", "kind", "quantity", "amount_cents", "occurred_at")
    connection = await asyncpg.connect(database_url)
    figures = []
    try:
        for method in ("copy_records_to_table", "executemany"):
            await connection.execute(
                "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id bigserial PRIMARY KEY, org_id text NOT NULL, "
                "kind text NOT NULL, quantity integer NOT NULL, amount_cents bigint NOT NULL, occurred_at timestamptz NOT NULL)"
            )
            started = time.perf_counter()
            for offset in range(0, rows, batch):
                chunk = records[offset : offset + batch]
                async with connection.transaction():
                    if method == "executemany":
                        await connection.executemany(
                            "INSERT INTO bench_rows (org_id, kind, quantity, amount_cents, occurred_at) VALUES ($1, $2, $3, $4, $5)",
                            chunk,
                        )
                    else:
                        await connection.copy_records_to_table("bench_rows", columns=columns, records=chunk)
            elapsed = time.perf_counter() - started
            label = "COPY" if method == "copy_records_to_table" else method
            figures.append(
                Figure(f"baseline: asyncpg {label}, {batch}-row txns, 1 conn", rows / elapsed, "rows/s", f"({rows:,} rows)")
            )
        await connection.execute("DROP TABLE bench_rows")
    finally:
        await connection.close()
    return figures


async def echo_responder_rate(nats_url: str, clients: int = 16, requests_per_client: int = 1000) -> list[Figure]:
    """A bare nats-py subscription that answers at once, asked by `clients` connections one request at a time each."""
    server = await nats.connect(nats_url)
    connections = [await nats.connect(nats_url) for _ in range(clients)]
    latencies: list[float] = []

    async def echo(msg) -> None:
        await msg.respond(msg.data)

    try:
        await server.subscribe("bench.echo", queue="echo", cb=echo)
        await server.flush()
        body = b'{"command_id": "' + b"x" * 32 + b'", "org_id": "org_bench"}'

        async def client(nc: nats.NATS) -> None:
            for _ in range(requests_per_client):
                started = time.perf_counter()
                await nc.request("bench.echo", body, timeout=10)
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client(nc) for nc in connections))
        elapsed = time.perf_counter() - started
    finally:
        for nc in connections:
            await nc.close()
        await server.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return [
        Figure(f"baseline: bare nats-py echo responder, {clients} clients", clients * requests_per_client / elapsed, "reqs/s"),
        Figure("  echo latency p99", p99, "ms"),
    ]
