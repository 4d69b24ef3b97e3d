"""A partitioned projector's consumer gauges read its own stream: the durable `<service>-p<p>` lives on
`MEMBERSHIP_PARTITIONED_<N>`, not on `MEMBERSHIP` (found by the contract review: the probe asked
MEMBERSHIP and failed on every sample)."""

from __future__ import annotations

import asyncio

import asyncpg
import nats

from shared import telemetry
from shared.bus import declare_streams
from shared.consumer import ConsumerSettings, ProjectionConsumer, prepare
from shared.partitions import Partition
from tests.integration.test_partitions import partition_of
from tests.integration.test_projection_consumer import AppliedLog, applied, envelope, publish


async def test_the_consumer_probe_reads_a_partitioned_durable_on_its_own_stream(clean_nats, database_url):
    await declare_streams(clean_nats, partitions=2)
    nc = await nats.connect(clean_nats)
    js = nc.jetstream()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    org = "acme"
    partition = Partition(2, partition_of(org, 2))
    durable = ConsumerSettings.for_service("billing", partition).durable
    settings = ConsumerSettings(durable=durable, service="billing", partition=partition, retry_delay=0.1, ack_wait=1.0)
    consumer = ProjectionConsumer(js, pool, AppliedLog(), settings)
    async with pool.acquire() as connection:
        await prepare(connection, consumer.projection)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await publish(js, envelope(org, 1))
        assert await applied(pool, 1) == [(org, 1)]
        await telemetry.consumer_probe(consumer)()
        last = (await js.stream_info(partition.stream)).state.last_seq
        assert telemetry.CONSUMER_STREAM_LAST.labels(durable)._value.get() == last
    finally:
        stop.set()
        await task
        await pool.close()
        await nc.close()
