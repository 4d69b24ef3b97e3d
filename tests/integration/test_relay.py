"""The relay publishes the event store onto JetStream: every event once, in order, across crashes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec

from services.membership.application import MembershipApplication
from services.membership.domain.organization import CommandContext, Organization
from services.membership.secrets import Secrets
from shared import subjects
from shared.clock import FixedClock
from shared.contract.common import Actor
from shared.settings import postgres_env
from teamctl.client import Client

SYSTEM = Actor(type="system", id="platform")
ORGS, SEAT_PURCHASES = 150, 60


def record_history(database_url: str) -> list[str]:
    """Writes ORGS organizations of 1 + SEAT_PURCHASES events each straight into the store."""
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    app = MembershipApplication(clock, Secrets("test-secret"), env=postgres_env(database_url, pool_size=2))
    counter = iter(range(10**9))

    def new_id(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def ctx(command_id: str) -> CommandContext:
        return CommandContext(SYSTEM, command_id, None, clock.now(), new_id)

    try:
        for n in range(ORGS):
            org = Organization.create(ctx(f"create-{n}"), f"org-{n}", f"Org {n}", "pro", f"owner-{n}", f"o{n}@x.io")
            for k in range(SEAT_PURCHASES):
                org.add_seats(ctx(f"seats-{n}-{k}"), 1, 10_000)
            app.save(org)
        return [app.mapper.to_domain_event(n).event_id for n in app.recorder.select_notifications(1, 10**6)]
    finally:
        app.close()


async def stream_event_ids(nc) -> list[str]:
    js = nc.jetstream()
    total = (await js.stream_info(subjects.STREAM)).state.messages
    sub = await js.subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    ids = []
    try:
        for _ in range(total):
            message = await sub.next_msg(timeout=5)
            ids.append(msgspec.json.decode(message.data)["event_id"])
    finally:
        await sub.unsubscribe()
    return ids


async def wait_for_count(nc, at_least: int, timeout: float = 60.0) -> int:
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            count = (await js.stream_info(subjects.STREAM)).state.messages
        except Exception:
            count = 0
        if count >= at_least:
            return count
        await asyncio.sleep(0.005)
    raise TimeoutError(f"stream holds fewer than {at_least} messages")


async def test_a_relay_killed_mid_stream_publishes_every_event_exactly_once_after_restart(service_env, tmp_path, nc):
    from tests.services_under_test import ServiceUnderTest

    recorded = await asyncio.to_thread(record_history, service_env["DATABASE_URL"])
    assert len(recorded) == ORGS * (1 + SEAT_PURCHASES)

    service = ServiceUnderTest("membership", {**service_env, "RELAY_BATCH_SIZE": "50"}, tmp_path)
    service.start(wait=False)
    try:
        published_before_crash = await wait_for_count(nc, 500)
        service.kill()
        assert published_before_crash < len(recorded), "the crash came too late to interrupt the relay"
        service.start()
        await wait_for_count(nc, len(recorded))
        marker = await Client(nc).command(
            "create_organization", name="Marker", plan="pro", owner={"user_id": "m1", "email": "m1@x.io"}
        )
        await wait_for_count(nc, len(recorded) + 1)  # published after anything the relay could publish twice
        on_stream = await stream_event_ids(nc)
    finally:
        service.stop()

    assert on_stream == [*recorded, *marker["events"]]  # all of them, once each, in the store's order


async def test_per_org_sequences_on_the_stream_are_gapless(membership, nc):
    from teamctl.client import Client

    client = Client(nc)
    orgs = []
    for n in range(3):
        reply = await client.command(
            "create_organization", name=f"O{n}", plan="pro", owner={"user_id": f"u{n}", "email": f"u{n}@x.io"}
        )
        orgs.append(reply["result"]["org_id"])
    for _ in range(4):
        for org_id in orgs:
            reply = await client.command("add_seats", org_id=org_id, quantity=1, accept_charge_cents=10_000)
            assert reply["ok"], reply
    await wait_for_count(nc, 15)
    js = nc.jetstream()
    sub = await js.subscribe(subjects.EVENTS_WILDCARD, ordered_consumer=True)
    sequences: dict[str, list[int]] = {}
    for _ in range(15):
        envelope = msgspec.json.decode((await sub.next_msg(timeout=5)).data)
        sequences.setdefault(envelope["org_id"], []).append(envelope["sequence"])
    await sub.unsubscribe()
    assert sequences == {org_id: [1, 2, 3, 4, 5] for org_id in orgs}
