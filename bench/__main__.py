"""`make bench`: every benchmark of the project beside the machine's baselines, in one report."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import uvloop

from devstack import free_port
from devstack.smtp_sink_server import SmtpSink
from tests.services_under_test import ServiceUnderTest

from . import audit
from .authorize import authorize_figures
from .baselines import asyncpg_batched_insert_rate, asyncpg_commit_rate, echo_responder_rate, jetstream_publish_rate
from .billing import live_lag, rebuild_throughput
from .edge import EdgeUnderBench, edge_overhead
from .measure import Figure, cpu_of_each, cpu_per_command
from .membership import invite_throughput
from .stack import ServiceFromTree, bench_stack, raw_http_responder, wait_drained


def report(title: str, figures: list) -> None:
    sys.stdout.write(f"\n{title}\n" + "\n".join(figure.line() for figure in figures) + "\n")
    sys.stdout.flush()


SECTIONS = ("membership", "stack", "authorize", "billing", "audit", "http")


def baselines(stack) -> tuple[Figure, Figure, Figure]:
    commit = asyncio.run(asyncpg_commit_rate(stack.database("bench_baseline")))
    copy, executemany = asyncio.run(asyncpg_batched_insert_rate(stack.database("bench_baseline")))
    publish = asyncio.run(jetstream_publish_rate(stack.nats.url))
    report("Machine baselines (this run)", [commit, copy, executemany, publish])
    return commit, copy, publish


def audit_section(copy: Figure, publish: Figure) -> None:
    """A stack of its own: the MEMBERSHIP stream holds only the audit's synthetic events."""
    began = time.perf_counter()
    with bench_stack() as stack:
        figures = audit.run(stack, **audit_scale())
    live = next(figure for figure in figures if figure.name.startswith("live projection"))
    figures.insert(
        figures.index(live) + 1, Figure("  live catch-up, share of batched COPY insert rate", 100 * live.value / copy.value, "%")
    )
    rebuild = figures[-1]
    figures.append(Figure("  rebuild, share of batched COPY insert rate", 100 * rebuild.value / copy.value, "%"))
    figures.append(Figure("  rebuild, share of JetStream async publish rate", 100 * rebuild.value / publish.value, "%"))
    report(
        f"Audit log (targets: search p99 <= 50 ms for every action filter, export >= 20,000 entries/s, catch-up and rebuild >= 20% of COPY, a stretch; section {time.perf_counter() - began:.0f} s)",
        figures,
    )


def audit_scale() -> dict:
    """BENCH_AUDIT_ENTRIES / BENCH_AUDIT_REBUILD (0: rebuild the searched entries in place) for quick trials."""
    scale: dict = {}
    if os.environ.get("BENCH_AUDIT_ENTRIES"):
        scale["entries"] = int(os.environ["BENCH_AUDIT_ENTRIES"])
    if os.environ.get("BENCH_AUDIT_REBUILD"):
        scale["rebuild_events"] = int(os.environ["BENCH_AUDIT_REBUILD"]) or None
    return scale


def main() -> None:
    """`python -m bench [section ...]`: every section, or only those named (always with the baselines)."""
    wanted = set(sys.argv[1:]) or set(SECTIONS)
    if wanted - set(SECTIONS):
        sys.exit(f"usage: python -m bench [{' | '.join(SECTIONS)} ...]")
    began = time.perf_counter()
    with bench_stack() as stack:
        commit, copy, publish = baselines(stack)
        if "membership" in wanted:
            membership_section(stack, commit)
        if "billing" in wanted:
            billing_section(stack, copy, publish)
    if "authorize" in wanted:
        authorize_section()
    if "stack" in wanted:
        whole_stack_section()
    if "billing" in wanted:
        billing_live_section()
    if "audit" in wanted:
        audit_section(copy, publish)
    if "http" in wanted:
        http_section()
    sys.stdout.write(f"\n(bench ran {time.perf_counter() - began:.0f} s)\n")


def membership_section(stack, commit: Figure) -> None:
    membership = stack.service("membership", stack.database("bench_membership")).start()
    try:
        with cpu_per_command(membership) as cpu:
            figures = asyncio.run(invite_throughput(stack.nats.url))
    finally:
        membership.stop()
    rate = figures[0]
    figures.append(Figure("ratio to the single-connection commit rate", rate.value / commit.value, "x"))
    figures.append(cpu.figure(commands=16 * 400))
    report("Membership commands, membership alone (target: >= 0.7 of the commit rate, p99 <= 25 ms)", figures)


def whole_stack_section() -> None:
    """A stack of its own: all four services and the SMTP sink; every invitation past the included seats buys one."""
    with bench_stack() as stack:
        smtp = SmtpSink(stack.scratch / "mail", free_port())
        smtp.start()
        services = []
        try:
            echo = asyncio.run(echo_responder_rate(stack.nats.url, clients=16))
            smtp_url = {"SMTP_URL": smtp.url}
            for name in ("membership", "billing", "audit", "notifier"):
                services.append(stack.service(name, stack.database(f"bench_{name}"), **smtp_url).start())
            with cpu_of_each(services) as cpus:
                figures = asyncio.run(
                    invite_throughput(stack.nats.url, clients=16, invites_per_client=200, buy_seats_first=False)
                )
                drained = asyncio.run(wait_drained(stack.nats.url, smtp, mails=16 * 200))
        finally:
            for service in reversed(services):
                service.stop()
            smtp.stop()
        figures[0].name = "invite_member buying seats, whole stack, 16 orgs"
        figures.insert(0, echo[1])
        figures.insert(0, echo[0])
        figures.append(Figure("ratio to the echo responder at 16 clients", figures[2].value / echo[0].value, "x"))
        figures.append(Figure("projections and mail done after the last reply", drained, "s"))
        figures += [cpu.figure(commands=16 * 200) for cpu in cpus]  # until drained: every service's share
        report("invite_member, whole stack (target: >= 0.08 of the echo responder)", figures)


def authorize_section() -> None:
    """A stack of its own: a relay starting on a fresh database would otherwise find the stream (and the
    access bucket) ahead of its store, written by the membership section's service."""
    with bench_stack() as stack:
        membership = stack.service("membership", stack.database("bench_authorize")).start()
        try:
            figures = asyncio.run(authorize_figures(stack.nats.url))
        finally:
            membership.stop()
    report(
        "Authorize (targets: >= 80% of echo's rate, p99 <= 2x echo's; embedded >= 200,000/s; revocation p99 <= 100 ms)", figures
    )


def billing_section(stack, copy: Figure, publish: Figure) -> None:
    # Replaces the MEMBERSHIP stream of this stack with synthetic events only.
    figures = asyncio.run(rebuild_throughput(stack))
    rebuild = figures[-1]
    figures.append(Figure("share of the batched COPY insert rate", 100 * rebuild.value / copy.value, "%"))
    figures.append(Figure("share of the JetStream async publish rate", 100 * rebuild.value / publish.value, "%"))
    report("Billing rebuild (target, a stretch: >= 20% of the batched COPY insert rate)", figures)


def billing_live_section() -> None:
    # A stack of its own: a fresh stream, so billing's lag covers only these commands.
    with bench_stack() as stack:
        membership = stack.service("membership", stack.database("bench_membership")).start()
        billing = stack.service("billing", stack.database("bench_billing")).start()
        try:
            figures = asyncio.run(live_lag(stack.nats.url))
        finally:
            billing.stop()
            membership.stop()
        report("Billing live projection at 200 cmds/s (target: lag p99 <= 100 ms)", figures)


def http_section() -> None:
    """A stack of its own: membership and the edge; the same calls through the edge and over NATS.

    BENCH_EDGE_BASELINE=<source tree>[:<source tree>...] (a checkout of main, say) runs an edge from
    each tree beside this one's, so a change to the edge is measured against its baseline in one run."""
    baseline_trees = [Path(tree) for tree in os.environ.get("BENCH_EDGE_BASELINE", "").split(os.pathsep) if tree]
    with bench_stack() as stack, raw_http_responder(stack.scratch) as raw_url:
        database = stack.database("bench_http")
        membership = stack.service("membership", database).start()
        started: list[ServiceUnderTest] = [membership]
        try:
            web = stack.service("web", database).start()
            started.append(web)
            edges = [_under_bench("edge", web)]
            for tree in baseline_trees:
                env = {**stack.service("web", database).env, "WEB_PORT": str(free_port())}
                baseline = ServiceFromTree("web", env, stack.scratch / f"baseline-{len(edges)}", tree).start()
                started.append(baseline)
                edges.append(_under_bench(f"edge of {tree.name}", baseline))
            figures = uvloop.run(edge_overhead(stack.nats.url, edges, raw_url))
        finally:
            for service in reversed(started):
                service.stop()
        report("HTTP edge against NATS straight (the edge's overhead; one edge process, bench.http_load clients)", figures)


def _under_bench(label: str, web: ServiceUnderTest) -> EdgeUnderBench:
    assert web.popen is not None
    return EdgeUnderBench(label, web.base_url, web.popen.pid)


if __name__ == "__main__":
    main()
