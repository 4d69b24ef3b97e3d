"""NATS plumbing every service shares: the event stream, the dead-letter stream, and the partitioned
copies of the event stream that partitioned projectors read (`shared/partitions.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamSource, SubjectTransform
from nats.js.errors import BadRequestError, ServiceUnavailableError

from . import subjects
from .partitions import partition_transform, partitioned_stream

DUPLICATE_WINDOW_SECONDS = 15 * 60.0


def event_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.STREAM,
        subjects=[subjects.EVENTS_WILDCARD],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_age=0,
        num_replicas=replicas,
    )


def dead_letter_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.DEAD_LETTER_STREAM,
        subjects=["deadletter.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=0,
        num_replicas=replicas,
    )


def partitioned_stream_config(count: int, replicas: int = 1) -> StreamConfig:
    """`MEMBERSHIP_PARTITIONED_<count>`: every message of MEMBERSHIP, from its first, under
    `partitioned.<count>.<p>.membership.events.<org_id>.<EventType>`. It has no subjects of its own:
    nothing can publish into it but the source."""
    source, destination = partition_transform(count)
    return StreamConfig(
        name=partitioned_stream(count),
        subjects=[],
        sources=[StreamSource(name=subjects.STREAM, subject_transforms=[SubjectTransform(src=source, dest=destination)])],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        max_age=0,
        num_replicas=replicas,
    )


STREAM_NAME_IN_USE = 10058  # JetStream's error code: the stream exists with another configuration


async def ensure_stream(js: JetStreamContext, config: StreamConfig, attempts: int = 20) -> None:
    """Creates the stream, or brings an existing one to this configuration.

    A cluster that has just started may refuse for a few seconds while it elects its leaders."""
    for attempt in range(1, attempts + 1):
        try:
            await js.add_stream(config)
            return
        except BadRequestError as refused:
            if refused.err_code == STREAM_NAME_IN_USE:
                await js.update_stream(config)
                return
            if attempt == attempts:
                raise
        except (nats.errors.TimeoutError, ServiceUnavailableError):
            if attempt == attempts:
                raise
        await asyncio.sleep(min(0.25 * attempt, 2.0))


async def connect(nats_url: str, **options: Any) -> nats.NATS:
    """`NATS_URL` may list several servers of a cluster, separated by commas; reconnects for ever."""
    servers = [url.strip() for url in nats_url.split(",") if url.strip()]
    return await nats.connect(servers=servers, max_reconnect_attempts=-1, **options)


async def declare_streams(nats_url: str, replicas: int = 1, partitions: int = 1) -> None:
    """The event and dead-letter streams, and, when `partitions` > 1, `MEMBERSHIP_PARTITIONED_<partitions>`."""
    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, event_stream_config(replicas))
        await ensure_stream(js, dead_letter_stream_config(replicas))
        if partitions > 1:
            await ensure_stream(js, partitioned_stream_config(partitions, replicas))
    finally:
        await nc.close()
