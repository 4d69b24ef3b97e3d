"""teamctl: talk to the running stack from a terminal.

teamctl cmd create_organization '{"name": "Acme", "plan": "pro", "owner": {"user_id": "u1", "email": "me@acme.io"}}'
teamctl query membership seat_quote '{"org_id": "..."}'
teamctl events --org ORG_ID
teamctl replay billing
teamctl audit verify --org ORG_ID
teamctl audit export --org ORG_ID --from 2026-01-01T00:00:00Z --format csv --output audit.csv
teamctl health
teamctl demo
teamctl status
teamctl dlq list [--service billing]
teamctl dlq retry billing SEQUENCE
teamctl login --user u1 --email me@acme.io [--next /orgs/acme/settings/team]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import msgspec
import nats
import nats.js.errors
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.dead_letters import parked
from shared.topology import COMMAND_SERVICE, PROJECTORS, SERVICES

from .client import Client
from .demo import run_demo
from .login import login

try:
    from .progress import progress
except ModuleNotFoundError as missing:  # installed without its extra: the services' dependencies only
    sys.exit(f"teamctl: {missing.name} is missing; install the teamctl extra: pip install 'team-members[teamctl]'")


def _print(document: object) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


async def _cmd(client: Client, args: argparse.Namespace) -> int:
    reply = await client.command(args.name, **json.loads(args.body))
    _print(reply)
    return 0 if reply.get("ok") else 1


async def _query(client: Client, args: argparse.Namespace) -> int:
    reply = await client.query(args.service, args.name, **json.loads(args.body))
    _print(reply)
    return 0 if reply.get("ok") else 1


async def _health(client: Client, _: argparse.Namespace) -> int:
    healthy = True
    for service in SERVICES:
        status = await _health_of(client, service)
        healthy &= status == "ok" or (status == "not running" and service != COMMAND_SERVICE)
        sys.stdout.write(f"{service:<12} {status}\n")
    return 0 if healthy else 1


async def _events(client: Client, args: argparse.Namespace) -> int:
    js = client.nc.jetstream()
    subject = f"membership.events.{args.org}.>" if args.org else subjects.EVENTS_WILDCARD
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        while True:
            try:
                message = await sub.next_msg(timeout=None if args.follow else 1.0)
            except nats.errors.TimeoutError:
                return 0
            envelope = msgspec.json.decode(message.data)
            sys.stdout.write(
                f"{envelope['org_id']} #{envelope['sequence']:<4} {envelope['event_type']:<20} {json.dumps(envelope['data'])}\n"
            )
    finally:
        await sub.unsubscribe()


async def _replay(client: Client, args: argparse.Namespace) -> int:
    """Rebuilds a service's projection from the stream, with progress; the service keeps answering."""
    client.timeout = args.timeout
    rebuild = asyncio.create_task(client.request(f"{args.service}.admin.rebuild", {}))
    with progress(f"replaying into {args.service}", unit=" events") as bar:
        while not rebuild.done():
            await asyncio.wait([rebuild], timeout=0.5)
            try:
                status = (await client.query_subject(f"{args.service}.admin.rebuild_status"))["result"]
                bar.total = status["stream_messages"]
                bar.update(status["events_replayed"] - bar.n)
            except (nats.errors.TimeoutError, KeyError, TypeError):
                pass
        reply = rebuild.result()
        if reply.get("ok"):  # the last poll may have come before the last message
            replayed = bar.total or reply["result"]["events"]
            bar.total = replayed
            bar.update(replayed - bar.n)
    _print(reply)
    return 0 if reply.get("ok") else 1


async def _status(client: Client, _: argparse.Namespace) -> int:
    """Each service's health, each consumer's position and lag, the dead letters."""
    js = client.nc.jetstream()
    try:
        stream = (await js.stream_info(subjects.STREAM)).state
        sys.stdout.write(f"stream {subjects.STREAM}: {stream.messages:,} events, last sequence {stream.last_seq:,}\n")
    except nats.js.errors.NotFoundError:
        sys.stdout.write(f"stream {subjects.STREAM}: not there yet\n")
    letters = await parked(js)
    sys.stdout.write(f"{'service':<12} {'health':<12} {'position':>10} {'behind':>8} {'unacked':>8} {'dead letters':>13}\n")
    healthy = True
    for service in SERVICES:
        health = await _health_of(client, service)
        healthy &= health in ("ok", "not running")
        position = behind = unacked = "-"
        if service in PROJECTORS:  # membership writes the stream and the edge holds nothing: no consumer
            try:
                consumer = await js.consumer_info(subjects.STREAM, service)
                position, behind, unacked = consumer.delivered.stream_seq, consumer.num_pending, consumer.num_ack_pending
            except nats.js.errors.NotFoundError:
                pass
        dead = sum(1 for letter in letters if letter["service"] == service)
        sys.stdout.write(f"{service:<12} {health:<12} {position!s:>10} {behind!s:>8} {unacked!s:>8} {dead:>13}\n")
    return 0 if healthy else 1


async def _health_of(client: Client, service: str) -> str:
    try:
        reply = await client.query(service, "health")
        return "ok" if reply.get("ok") else "failing"
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return "not running"


async def _dlq_list(client: Client, args: argparse.Namespace) -> int:
    _print(await parked(client.nc.jetstream(), args.service))
    return 0


async def _dlq_retry(client: Client, args: argparse.Namespace) -> int:
    reply = await client.request(f"{args.service}.admin.retry_dead_letter", {"sequence": args.sequence})
    _print(reply)
    return 0 if reply.get("ok") else 1


async def _audit_verify(client: Client, args: argparse.Namespace) -> int:
    reply = await client.query("audit", "verify", org_id=args.org)
    _print(reply)
    return 0 if reply.get("ok") and reply["result"]["ok"] else 1


async def _audit_export(client: Client, args: argparse.Namespace) -> int:
    """Fetches the export chunk by chunk, with a running count on stderr."""
    window = {key: value for key, value in (("from", args.start), ("to", args.end)) if value}
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115, ASYNC230 - closed below
    cursor = None
    try:
        with progress("exported", unit=" entries", bar_format="{desc} {n_fmt} entries [{elapsed}, {rate_fmt}]") as bar:
            while True:
                body = {"org_id": args.org, "format": args.format, **window, **({"cursor": cursor} if cursor else {})}
                reply = await client.request(subjects.query("audit", "export"), body)
                if not reply.get("ok"):
                    _print(reply)
                    return 1
                out.write(reply["result"]["data"])
                bar.update(reply["result"]["entries"])
                cursor = reply["result"]["next_cursor"]
                if cursor is None:
                    break
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


async def _demo(client: Client, args: argparse.Namespace) -> int:
    return await run_demo(client, Path(args.mail_dir))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teamctl", description="Operate the team-membership stack over NATS.")
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    commands = parser.add_subparsers(dest="action", required=True)

    cmd = commands.add_parser("cmd", help="send membership.cmd.NAME; command_id and a system actor are added unless given")
    cmd.add_argument("name")
    cmd.add_argument("body", nargs="?", default="{}", help="the command's fields as JSON")
    cmd.set_defaults(run=_cmd)

    query = commands.add_parser("query", help="send SERVICE.query.NAME")
    query.add_argument("service", choices=SERVICES)
    query.add_argument("name")
    query.add_argument("body", nargs="?", default="{}")
    query.set_defaults(run=_query)

    events = commands.add_parser("events", help="print the events on the MEMBERSHIP stream")
    events.add_argument("--org", help="only this organization's events")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.set_defaults(run=_events)

    replay = commands.add_parser("replay", help="rebuild a service's projection from the first event")
    replay.add_argument("service", choices=PROJECTORS)
    replay.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the rebuild")
    replay.set_defaults(run=_replay)

    audit = commands.add_parser("audit", help="for auditors: verify the chain, export a time range")
    audit_actions = audit.add_subparsers(dest="audit_action", required=True)
    verify = audit_actions.add_parser("verify", help="recompute an organization's hash chain")
    verify.add_argument("--org", required=True)
    verify.set_defaults(run=_audit_verify)
    export = audit_actions.add_parser("export", help="an organization's entries as NDJSON or CSV")
    export.add_argument("--org", required=True)
    export.add_argument("--from", dest="start", help="RFC 3339 time, inclusive")
    export.add_argument("--to", dest="end", help="RFC 3339 time, exclusive")
    export.add_argument("--format", choices=["ndjson", "csv"], default="ndjson")
    export.add_argument("--output", help="a file (default: standard output)")
    export.set_defaults(run=_audit_export)

    status = commands.add_parser("status", help="health, consumer positions and lag, dead letters")
    status.set_defaults(run=_status)

    dlq = commands.add_parser("dlq", help="dead letters: list them, or apply one again")
    dlq_actions = dlq.add_subparsers(dest="dlq_action", required=True)
    dlq_list = dlq_actions.add_parser("list")
    dlq_list.add_argument("--service", choices=PROJECTORS)
    dlq_list.set_defaults(run=_dlq_list)
    dlq_retry = dlq_actions.add_parser("retry")
    dlq_retry.add_argument("service", choices=PROJECTORS)
    dlq_retry.add_argument("sequence", type=int, help="the dead letter's sequence, from `dlq list`")
    dlq_retry.set_defaults(run=_dlq_retry)

    demo = commands.add_parser("demo", help="a scripted team story, then what every service made of it")
    demo.add_argument("--mail-dir", default="var/mail", help="where the SMTP sink writes (make run: var/mail)")
    demo.set_defaults(run=_demo)

    health = commands.add_parser("health", help="ask every service for its health")
    health.set_defaults(run=_health)

    sign_in = commands.add_parser("login", help="print a one-time sign-in link for the web edge (five minutes)")
    sign_in.add_argument("--user", required=True, help="the user id to sign in as")
    sign_in.add_argument("--email", required=True)
    sign_in.add_argument("--next", dest="next_path", help="a path on the edge to land on, such as /orgs/acme/settings/team")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.action == "login":  # signs with the server secret; no NATS needed
        return login(args.user, args.email, args.next_path)

    async def run() -> int:
        client = await Client.connect(args.nats_url)
        try:
            return await args.run(client, args)
        finally:
            await client.close()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
