"""`python -m bench.partitions`: billing's live catch-up over one stream, with one instance and with two
partitions (PARTITIONS=2), in the same run on the same synthetic history; repeated, alternating.

The clock runs from the first applied event to the last, so service start-up is left out; with two
partitions, `MEMBERSHIP_PARTITIONED_2` is filled before the instances start and timed on its own.
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
import nats

from shared.bus import ensure_stream, partitioned_stream_config

from .billing import fill_stream
from .measure import Figure
from .stack import BenchStack, bench_stack


async def _applied(pool: asyncpg.Pool) -> int:
    try:
        return int(await pool.fetchval("SELECT coalesce(sum(last_sequence), 0) FROM billing.positions"))
    except asyncpg.UndefinedTableError:
        return 0


async def _catch_up(database: str, total: int, timeout: float = 600.0) -> float:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        deadline = time.perf_counter() + timeout
        first = None
        while (applied := await _applied(pool)) < total:
            if first is None and applied > 0:
                first = time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"applied {applied} of {total}")
            await asyncio.sleep(0.05)
        return time.perf_counter() - (first or time.perf_counter())
    finally:
        await pool.close()


async def _fill_partitioned(nats_url: str, total: int) -> float:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        started = time.perf_counter()
        await ensure_stream(js, partitioned_stream_config(2))
        while True:
            if (await js.stream_info("MEMBERSHIP_PARTITIONED_2")).state.messages >= total:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


def run_once(stack: BenchStack, partitions: int, total: int, round_number: int) -> Figure:
    database = stack.database(f"bench_partitions_{partitions}_{round_number}")
    env = {"PARTITIONS": str(partitions)}
    instances = [stack.service("billing", database, **env, PARTITION=str(p)) for p in range(partitions)]
    for instance in instances:
        instance.start(wait=False)
    try:
        seconds = asyncio.run(_catch_up(database, total))
    finally:
        for instance in instances:
            instance.stop()
    label = "one instance (PARTITIONS=1)" if partitions == 1 else f"{partitions} partitions, one process each"
    return Figure(f"billing live catch-up, {label}", total / seconds, "events/s", f"({seconds:.1f} s)")


def main(orgs: int = 1000, seats_per_org: int = 59, rounds: int = 2) -> None:
    with bench_stack() as stack:
        total, _ = asyncio.run(fill_stream(stack.nats.url, orgs, seats_per_org))
        fill = asyncio.run(_fill_partitioned(stack.nats.url, total))
        figures = [Figure("MEMBERSHIP_PARTITIONED_2 sourced from MEMBERSHIP", total / fill, "msgs/s", f"({total:,} events)")]
        by_count: dict[int, list[float]] = {1: [], 2: []}
        for round_number in range(rounds):
            for partitions in (1, 2):
                figure = run_once(stack, partitions, total, round_number)
                by_count[partitions].append(figure.value)
                figures.append(figure)
        ratio = (sum(by_count[2]) / len(by_count[2])) / (sum(by_count[1]) / len(by_count[1]))
        figures.append(Figure("ratio, 2 partitions to one instance (mean of rounds)", ratio, "x"))
    sys.stdout.write("\nBilling by partition (same run, same stream)\n" + "\n".join(f.line() for f in figures) + "\n")


if __name__ == "__main__":
    main()
