"""Under a steady load of commands, kill -9 each service in turn, then NATS, then PostgreSQL.

Afterwards every read model matches the event store exactly: no charge, audit entry or email lost
or doubled, and every command that got an ok reply is in the history.
"""

from __future__ import annotations

import asyncio
import email
import itertools
import json
import time
from collections import Counter
from pathlib import Path

import asyncpg
import msgspec
import pytest

from shared import subjects
from shared.topology import SERVICES
from teamctl.client import Client
from tests.servers import (
    fresh_server_secret,
    nats_server_in_scratch_dir,
    postgres_server_in_scratch_dir,
    smtp_sink_in_scratch_dir,
)
from tests.services_under_test import ServiceUnderTest

OWNER = {"type": "user", "id": "owner"}


@pytest.fixture
def world(tmp_path: Path):
    with (
        nats_server_in_scratch_dir() as nats_server,
        postgres_server_in_scratch_dir() as postgres,
        smtp_sink_in_scratch_dir() as sink,
    ):
        postgres.create_database("crash")
        env = {
            "NATS_URL": nats_server.url,
            "DATABASE_URL": postgres.dsn("crash"),
            "SMTP_URL": sink.url,
            "SERVER_SECRET": fresh_server_secret(),
            "SMTP_RETRY_BASE_SECONDS": "0.2",
            "NOTIFIER_SENDING_TIMEOUT_SECONDS": "12",
            "SMTP_TIMEOUT_SECONDS": "5",
        }
        services = {name: ServiceUnderTest(name, env, tmp_path) for name in SERVICES}
        try:
            for service in services.values():
                service.start()
            yield nats_server, postgres, sink, services
        finally:
            for service in services.values():
                service.stop()


class Load:
    """Commands at a steady pace; remembers the events of every ok reply."""

    def __init__(self, client: Client, orgs: list[str]) -> None:
        self.client = client
        self.orgs = orgs
        self.accepted: list[str] = []
        self.refused = 0
        self.stopping = asyncio.Event()
        self._numbers = itertools.count()

    async def run(self, per_second: float = 25.0) -> None:
        while not self.stopping.is_set():
            n = next(self._numbers)
            org = self.orgs[n % len(self.orgs)]
            command = [
                ("invite_member", {"email": f"person{n}@crash.io", "role": "developer", "accept_charge_cents": 10_000}),
                ("add_seats", {"quantity": 1, "accept_charge_cents": 10_000}),
                ("remove_seats", {"quantity": 1}),
                ("create_api_key", {"name": f"key{n}", "permissions": ["gateway:use"]}),
            ][n % 4]
            try:
                reply = await self.client.command(command[0], org_id=org, actor=OWNER, **command[1])
                if reply.get("ok"):
                    self.accepted += reply["events"]
                else:
                    self.refused += 1
            except Exception:
                self.refused += 1  # NATS down, a timeout: the caller knows it did not get an ok
            await asyncio.sleep(1 / per_second)


async def settle(client: Client, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def stream_events(client: Client) -> list[dict]:
    js = client.nc.jetstream()
    total = (await js.stream_info(subjects.STREAM)).state.messages
    sub = await js.subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    try:
        return [msgspec.json.decode((await sub.next_msg(timeout=10)).data) for _ in range(total)]
    finally:
        await sub.unsubscribe()


async def test_killing_every_process_in_turn_loses_and_doubles_nothing(world):
    nats_server, postgres, sink, services = world
    client = Client(await __import__("shared.bus", fromlist=["connect"]).connect(nats_server.url), timeout=5)
    orgs = []
    for n in range(3):
        created = await client.command(
            "create_organization", name=f"Crash {n}", plan="pro", owner={"user_id": "owner", "email": f"owner{n}@crash.io"}
        )
        orgs.append(created["result"]["org_id"])
    load = Load(client, orgs)
    loading = asyncio.create_task(load.run())
    await asyncio.sleep(2)

    for name in SERVICES:
        services[name].kill()
        await asyncio.sleep(1)
        await asyncio.to_thread(services[name].start)
        await asyncio.sleep(1.5)
    nats_server.kill()
    await asyncio.sleep(1)
    nats_server.start()
    await asyncio.sleep(4)
    postgres.kill()
    await asyncio.sleep(1)
    postgres.start()
    await asyncio.sleep(5)
    load.stopping.set()
    await loading
    assert len(load.accepted) > 100, f"too little got through: {len(load.accepted)} accepted, {load.refused} refused"

    db = await asyncpg.connect(postgres.dsn("crash"))
    try:
        stored = [
            json.loads(bytes(row["state"]))["event_id"]
            for row in await db.fetch("SELECT state FROM membership_events ORDER BY notification_id")
        ]
        events = await _converged_stream(client, len(stored))
        assert [e["event_id"] for e in events] == stored  # the stream is the store, once each, in order
        assert set(load.accepted) <= set(stored)  # every ok reply is in the history

        by_org = {org: [e for e in events if e["org_id"] == org] for org in orgs}
        for org, history in by_org.items():
            seat_events = sorted(e["event_id"] for e in history if e["event_type"] in ("SeatAdded", "SeatRemoved"))
            await _until(lambda org=org: _charged(db, org), seat_events, "billing")
            await _until(lambda org=org: _audited(db, org), [e["event_id"] for e in history], "audit")
            verified = await client.query("audit", "verify", org_id=org)
            assert verified["result"]["ok"] is True, verified

        invitations = sorted(e["event_id"] for e in events if e["event_type"] in ("MemberInvited", "InvitationResent"))
        await _until(lambda: _mailed(db), invitations, "notifier")
        message_ids = Counter(email.message_from_bytes(p.read_bytes())["Message-ID"] for p in sink.messages())
        assert {f"<{event_id}@team-members.notifier>" for event_id in invitations} <= set(message_ids)
        doubled = [mid for mid, count in message_ids.items() if count > 1]
        assert len(doubled) <= 1, f"more duplicates than the one notifier crash can explain: {doubled}"
    finally:
        await db.close()
        await client.close()


async def _converged_stream(client: Client, expected: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        info = await client.nc.jetstream().stream_info(subjects.STREAM)
        if info.state.messages >= expected or time.monotonic() > deadline:
            return await stream_events(client)
        await asyncio.sleep(0.5)


async def _until(probe, expected: list[str], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found == expected or time.monotonic() > deadline:
            assert found == expected, f"{what}: {len(found)} rows for {len(expected)} events"
            return
        await asyncio.sleep(0.5)


async def _charged(db, org: str) -> list[str]:
    return sorted(
        r["event_id"]
        for r in await db.fetch("SELECT event_id FROM billing.charges WHERE org_id = $1 AND kind <> 'seat_renewal'", org)
    )


async def _audited(db, org: str) -> list[str]:
    return [r["event_id"] for r in await db.fetch("SELECT event_id FROM audit.entries WHERE org_id = $1 ORDER BY seq", org)]


async def _mailed(db) -> list[str]:
    return sorted(r["event_id"] for r in await db.fetch("SELECT event_id FROM notifier.deliveries WHERE status = 'sent'"))
