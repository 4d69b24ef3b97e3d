"""Billing scaled out by partition, on real NATS and PostgreSQL: two instances, each owning the
organizations of its partition, together apply every event exactly once, and the ledger they write
equals, row for row, the one a single unpartitioned instance writes from the same stream."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.billing.projection import LIVE_SCHEMA, BillingProjection
from shared.bus import declare_streams
from shared.clock import FixedClock
from shared.consumer import ConsumerSettings, ProjectionConsumer
from shared.contract.events import Envelope
from shared.dead_letters import parked
from shared.partitions import Partition, original_subject, partitioned_stream
from shared.settings import ConfigurationError
from teamctl.client import Client
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.services_under_test import ServiceUnderTest
from tests.waiting import eventually

SINGLE_SCHEMA = "billing_single"
START = datetime(2024, 1, 31, 10, tzinfo=UTC)


def partition_of(org_id: str, count: int) -> int:
    """nats-server's `partition(N, ...)`: FNV-1a (32 bits) of the token, modulo N."""
    digest = 0x811C9DC5
    for byte in org_id.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % count


class Recorded:
    """Billing's projection, which also records, in the same transaction, which instance applied what:
    a row there exists exactly when the event's charges were committed."""

    def __init__(self, schema: str, instance: str) -> None:
        self.inner = BillingProjection(schema)
        self.schema = schema
        self.instance = instance

    async def create_tables(self, connection: asyncpg.Connection) -> None:
        await self.inner.create_tables(connection)
        await connection.execute("CREATE TABLE IF NOT EXISTS public.applied_by (instance text, event_id text, org_id text)")

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None:
        await self.inner.apply(connection, events)
        await connection.executemany(
            "INSERT INTO public.applied_by VALUES ($1, $2, $3)", [(self.instance, e.event_id, e.org_id) for e in events]
        )


class Instance:
    def __init__(self, js: Any, pool: asyncpg.Pool, schema: str, name: str, partition: Partition) -> None:
        self.js, self.pool = js, pool
        self.projection = Recorded(schema, name)
        settings = ConsumerSettings.for_service("billing", partition)
        fast = ConsumerSettings(
            durable=settings.durable,
            service="billing",
            partition=partition,
            max_attempts=2,
            retry_delay=0.1,
            gap_delay=0.1,
            ack_wait=2.0,
        )
        self.consumer = ProjectionConsumer(js, pool, self.projection, fast, FixedClock(START))


def histories(count: int) -> list[OrgHistory]:
    found = []
    for n in range(count):
        history = OrgHistory(f"org-{n}", START + timedelta(days=n))
        for k in range(5):
            at = START + timedelta(days=n + 7 * k + 1, hours=k)
            if k % 3 == 2:
                history.seats_removed(1, at)
            else:
                history.seats_added(k + 1, at)
            history.invited(at + timedelta(minutes=5))
        found.append(history)
    return found


async def publish_interleaved(js: Any, orgs: list[OrgHistory]) -> None:
    """Round robin over the organizations, so that the stream interleaves them as production does."""
    for batch in itertools.zip_longest(*(h.events for h in orgs)):
        for event in batch:
            if event is not None:
                await publish(js, event)


async def settled(js: Any, stream: str, durable: str) -> bool:
    """Everything delivered and acknowledged: nothing left that could come again."""
    info = await js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def caught_up(pool: asyncpg.Pool, schema: str, orgs: list[OrgHistory]) -> bool:
    rows = await pool.fetch(f'SELECT org_id, last_sequence FROM "{schema}".positions')
    return {r["org_id"]: r["last_sequence"] for r in rows} == {h.org_id: h.sequence for h in orgs}


async def table_rows(pool: asyncpg.Pool, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    tables = await pool.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
    found = {}
    for table in sorted(t["table_name"] for t in tables if t["table_name"] != "schema_migrations"):  # when, not what
        rows = [tuple(r) for r in await pool.fetch(f'SELECT * FROM "{schema}"."{table}"')]
        found[table] = sorted(rows, key=repr)
    return found


@pytest.fixture
async def three_instances(clean_nats: str, database_url: str) -> AsyncIterator[dict[str, Instance]]:
    """Partitions 0 and 1 of 2 into the live schema; a single instance over MEMBERSHIP into another."""
    await declare_streams(clean_nats, partitions=2)
    async with AsyncExitStack() as stack:
        instances = {}
        for name, schema, partition in (
            ("p0", LIVE_SCHEMA, Partition(2, 0)),
            ("p1", LIVE_SCHEMA, Partition(2, 1)),
            ("single", SINGLE_SCHEMA, Partition()),
        ):
            instances[name] = await stack.enter_async_context(
                consuming(
                    clean_nats,
                    database_url,
                    lambda js, pool, schema=schema, name=name, partition=partition: Instance(js, pool, schema, name, partition),
                )
            )
        yield instances


async def test_two_partitions_apply_every_event_once_and_equal_a_single_instance(three_instances):
    p0 = three_instances["p0"]  # the three share one NATS server and one database
    orgs = histories(12)
    await publish_interleaved(p0.js, orgs)
    every_event = {e["event_id"]: e["org_id"] for h in orgs for e in h.events}

    assert await eventually(lambda: caught_up(p0.pool, LIVE_SCHEMA, orgs), timeout=60)
    assert await eventually(lambda: caught_up(p0.pool, SINGLE_SCHEMA, orgs), timeout=60)
    stream = partitioned_stream(2)
    for durable in ("billing-p0", "billing-p1"):
        assert await eventually(lambda durable=durable: settled(p0.js, stream, durable), timeout=30)
    assert await eventually(lambda: settled(p0.js, "MEMBERSHIP", "billing"), timeout=30)

    applied = await p0.pool.fetch("SELECT instance, event_id, org_id FROM public.applied_by")
    by = {name: [(r["event_id"], r["org_id"]) for r in applied if r["instance"] == name] for name in ("p0", "p1", "single")}
    # Together, exactly once: every event, none twice, none by both.
    partitioned = by["p0"] + by["p1"]
    assert sorted(event_id for event_id, _ in partitioned) == sorted(every_event)
    assert sorted(event_id for event_id, _ in by["single"]) == sorted(every_event)
    # Each owns a disjoint set of organizations: the ones nats-server's partition(2, org) gives it.
    owned = {name: {org for _, org in by[name]} for name in ("p0", "p1")}
    assert owned["p0"].isdisjoint(owned["p1"])
    assert owned["p0"] and owned["p1"], "both partitions own organizations with these names"
    for index, name in enumerate(("p0", "p1")):
        assert owned[name] == {h.org_id for h in orgs if partition_of(h.org_id, 2) == index}

    # The ledger, row for row, table by table, equals the single instance's.
    together, alone = await table_rows(p0.pool, LIVE_SCHEMA), await table_rows(p0.pool, SINGLE_SCHEMA)
    assert set(together) == set(alone) >= {"charges", "accounts", "positions"}
    assert together == alone
    charges = together["charges"]
    assert len(charges) >= sum(1 for h in orgs for e in h.events if e["event_type"] in ("SeatAdded", "SeatRemoved"))
    assert len({row[0] for row in charges}) == len(charges)  # each charge once


async def test_a_poison_event_in_a_partition_is_parked_under_its_membership_subject_and_sequence(clean_nats, database_url):
    await declare_streams(clean_nats, partitions=2)
    acme = OrgHistory("acme", START)
    acme.seats_added(1, START + timedelta(days=1))
    poison = acme.seats_added(1, START + timedelta(days=2))
    poison["data"] = {"quantity": "many"}
    acme.seats_added(1, START + timedelta(days=3))
    index = partition_of("acme", 2)
    make = lambda js, pool: Instance(js, pool, LIVE_SCHEMA, f"p{index}", Partition(2, index))  # noqa: E731
    async with consuming(clean_nats, database_url, make) as instance:
        for event in acme.events:
            await publish(instance.js, event)
        assert await eventually(lambda: caught_up(instance.pool, LIVE_SCHEMA, [acme]), timeout=30)
        letters = await parked(instance.js, "billing")
        original = await instance.js.get_last_msg("MEMBERSHIP", "membership.events.acme.SeatAdded")
        assert [(p["original_subject"], p["original_stream_sequence"]) for p in letters] == [
            ("membership.events.acme.SeatAdded", str(original.seq - 1))
        ]


def test_partition_settings_are_validated():
    assert Partition.from_env({}) == Partition(1, 0)
    assert Partition.from_env({"PARTITIONS": "4", "PARTITION": "3"}) == Partition(4, 3)
    unpartitioned = ConsumerSettings.for_service("billing", Partition())
    assert (unpartitioned.durable, unpartitioned.partition.stream) == ("billing", "MEMBERSHIP")
    assert unpartitioned.partition.filter_subject == "membership.events.>"
    third = ConsumerSettings.for_service("audit", Partition(3, 2))
    assert (third.durable, third.partition.stream, third.partition.filter_subject) == (
        "audit-p2",
        "MEMBERSHIP_PARTITIONED_3",
        "partitioned.3.2.>",
    )
    for env, says in (
        ({"PARTITIONS": "2", "PARTITION": "2"}, "PARTITION must be between 0 and PARTITIONS - 1 = 1"),
        ({"PARTITIONS": "0"}, "PARTITIONS must be between 1 and"),
        ({"PARTITIONS": "two"}, "PARTITIONS must be a whole number"),
        ({"PARTITION": "-1"}, "PARTITION must be between 0 and PARTITIONS - 1 = 0"),
    ):
        with pytest.raises(ConfigurationError, match=says):
            Partition.from_env(env)
    assert original_subject("partitioned.2.1.membership.events.acme.SeatAdded") == "membership.events.acme.SeatAdded"
    assert original_subject("membership.events.acme.SeatAdded") == "membership.events.acme.SeatAdded"


async def test_two_billing_processes_share_the_work_by_partition_and_refuse_a_rebuild(service_env, tmp_path: Path):
    instances = []
    try:
        for index in (0, 1):
            log_dir = tmp_path / f"p{index}"
            log_dir.mkdir()
            env = {**service_env, "PARTITIONS": "2", "PARTITION": str(index)}
            instances.append(ServiceUnderTest("billing", env, log_dir).start())
        client = await Client.connect(service_env["NATS_URL"])
        try:
            js = client.nc.jetstream()
            orgs = histories(6)
            await publish_interleaved(js, orgs)
            pool = await asyncpg.create_pool(service_env["DATABASE_URL"], min_size=1, max_size=2)
            try:
                assert await eventually(lambda: caught_up(pool, LIVE_SCHEMA, orgs), timeout=60)
            finally:
                await pool.close()
            stream = partitioned_stream(2)
            for index in (0, 1):  # each process consumed its own partition to the end
                assert await eventually(lambda index=index: settled(js, stream, f"billing-p{index}"), timeout=30)
                info = await js.stream_info(stream, subjects_filter=f"partitioned.2.{index}.>")
                in_partition = sum((info.state.subjects or {}).values())
                assert in_partition == sum(len(h.events) for h in orgs if partition_of(h.org_id, 2) == index) > 0
            refused = await client.request("billing.admin.rebuild", {})
            assert refused["ok"] is False
            assert refused["error"]["code"] == "conflict"
            assert "PARTITIONS=1" in refused["error"]["message"]
        finally:
            await client.nc.close()
    finally:
        for instance in instances:
            instance.stop()


def test_a_billing_process_with_a_partition_out_of_range_refuses_to_start(service_env, tmp_path: Path):
    env = {**service_env, "PARTITIONS": "2", "PARTITION": "2"}
    with pytest.raises(RuntimeError, match="PARTITION must be between 0 and PARTITIONS - 1 = 1"):
        ServiceUnderTest("billing", env, tmp_path).start()
