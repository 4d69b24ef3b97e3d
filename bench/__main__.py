"""`make bench`: every benchmark of the project beside the machine's baselines, in one report."""

from __future__ import annotations

import asyncio
import sys

from .baselines import asyncpg_commit_rate, jetstream_publish_rate
from .membership import invite_throughput
from .stack import bench_stack


def report(title: str, figures: list) -> None:
    sys.stdout.write(f"\n{title}\n" + "\n".join(figure.line() for figure in figures) + "\n")


def main() -> None:
    with bench_stack() as stack:
        commit = asyncio.run(asyncpg_commit_rate(stack.database("bench_baseline")))
        publish = asyncio.run(jetstream_publish_rate(stack.nats.url))
        report("Machine baselines (this run)", [commit, publish])

        membership = stack.service("membership", stack.database("bench_membership")).start()
        try:
            figures = asyncio.run(invite_throughput(stack.nats.url))
        finally:
            membership.stop()
        rate = figures[0]
        figures.append(type(rate)("ratio to the single-connection commit rate", rate.value / commit.value, "x"))
        report("Membership commands (target: >= 500 cmds/s, p99 < 50 ms)", figures)


if __name__ == "__main__":
    main()
