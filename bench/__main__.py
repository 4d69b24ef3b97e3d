"""`make bench`: every benchmark of the project beside the machine's baselines, in one report."""

from __future__ import annotations

import asyncio
import sys
import time

from .baselines import asyncpg_batched_insert_rate, asyncpg_commit_rate, jetstream_publish_rate
from .billing import live_lag, rebuild_throughput
from .measure import Figure
from .membership import invite_throughput
from .stack import bench_stack


def report(title: str, figures: list) -> None:
    sys.stdout.write(f"\n{title}\n" + "\n".join(figure.line() for figure in figures) + "\n")
    sys.stdout.flush()


def main() -> None:
    began = time.perf_counter()
    with bench_stack() as stack:
        commit = asyncio.run(asyncpg_commit_rate(stack.database("bench_baseline")))
        copy, executemany = asyncio.run(asyncpg_batched_insert_rate(stack.database("bench_baseline")))
        publish = asyncio.run(jetstream_publish_rate(stack.nats.url))
        report("Machine baselines (this run)", [commit, copy, executemany, publish])

        membership = stack.service("membership", stack.database("bench_membership")).start()
        try:
            figures = asyncio.run(invite_throughput(stack.nats.url))
        finally:
            membership.stop()
        rate = figures[0]
        figures.append(Figure("ratio to the single-connection commit rate", rate.value / commit.value, "x"))
        report("Membership commands (target: >= 500 cmds/s, p99 < 50 ms)", figures)

        # Replaces the MEMBERSHIP stream of this stack with synthetic events only.
        figures = asyncio.run(rebuild_throughput(stack))
        rebuild = figures[-1]
        figures.append(Figure("share of the batched COPY insert rate", 100 * rebuild.value / copy.value, "%"))
        figures.append(Figure("share of the JetStream async publish rate", 100 * rebuild.value / publish.value, "%"))
        report("Billing rebuild (target: >= 10,000 events/s)", figures)

    # A stack of its own: a fresh stream, so billing's lag covers only these commands.
    with bench_stack() as stack:
        membership = stack.service("membership", stack.database("bench_membership")).start()
        billing = stack.service("billing", stack.database("bench_billing")).start()
        try:
            figures = asyncio.run(live_lag(stack.nats.url))
        finally:
            billing.stop()
            membership.stop()
        report("Billing live projection at 200 cmds/s (target: lag p99 < 250 ms)", figures)
    sys.stdout.write(f"\n(bench ran {time.perf_counter() - began:.0f} s)\n")


if __name__ == "__main__":
    main()
