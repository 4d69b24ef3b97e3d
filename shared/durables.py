"""A projector's durable consumer, created when missing and moved to the configured ack policy.

JetStream cannot change a consumer's `ack_policy` in place. A durable made with another policy (the
`AckPolicy.EXPLICIT` of earlier versions) is deleted and made again at its position: from its ack
floor + 1, below which everything is acknowledged. Messages above the floor acked one by one come
again and are skipped by the projection's positions; nothing below it is applied again.

Instances that start together take turns through a PostgreSQL advisory lock (`pg_advisory_xact_lock`
on the stream and durable), held across the read, the delete and the create: the second finds the
durable already moved. An instance of an earlier version does not take the lock; if one starts in the
instant between the delete and the create it makes the durable afresh (from the stream's first
message: a slow replay, nothing lost), and the create here fails and looks again.
"""

from __future__ import annotations

import dataclasses

import asyncpg
import structlog
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

log = structlog.get_logger()

ATTEMPTS = 5


async def ensure_durable(
    js: JetStreamContext, connection: asyncpg.Connection, stream: str, config: ConsumerConfig
) -> ConsumerInfo:
    """The durable `config.durable_name` on `stream`, with `config`'s ack policy; its info."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"durable:{stream}:{config.durable_name}")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await _ensure(js, stream, config)
            except BadRequestError:  # created meanwhile by someone not taking the lock: look again
                if attempt == ATTEMPTS:
                    raise
    raise AssertionError("unreachable")


async def _ensure(js: JetStreamContext, stream: str, config: ConsumerConfig) -> ConsumerInfo:
    durable = config.durable_name
    assert durable is not None
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return await js.add_consumer(stream, config)
    if info.config.ack_policy == config.ack_policy:
        return info
    start = info.ack_floor.stream_seq + 1
    await js.delete_consumer(stream, durable)
    moved = dataclasses.replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    log.warning(
        "durable recreated with a new ack policy", durable=durable, ack_policy=str(config.ack_policy), from_sequence=start
    )
    return await js.add_consumer(stream, moved)
