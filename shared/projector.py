"""What every projecting service shares: its lifecycle (pool, schema, consumer, responder, clean
stop) and the five requests every projection answers (`projection_routes`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats

from . import subjects, telemetry
from .bus import connect, declare_streams
from .clock import Clock
from .consumer import DEFAULT_LINGER, ConsumerSettings, Projection, ProjectionConsumer, prepare
from .contract import queries as q
from .dead_letters import DeadLetterDesk
from .errors import Conflict
from .partitions import Partition
from .rebuild import Rebuilder
from .requests import reply_handler
from .responder import Respond, Responder
from .settings import Settings, integer_setting
from .version import health

MAX_LINGER_MS = 1000  # past a second, a projection's lag is the linger's, not the load's

# What a service adds to its `projection_status`, besides the consumer's lag.
StatusDetails = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class ProjectionRuntime:
    pool: asyncpg.Pool
    nc: nats.NATS
    consumer: ProjectionConsumer
    responder: Responder
    clock: Clock
    _background: list[asyncio.Task[Any]] = field(default_factory=list)

    def in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """A loop (a scheduler) that runs until the service stops; cancelled then."""
        self._background.append(asyncio.create_task(work))


@asynccontextmanager
async def projection_runtime(
    settings: Settings,
    projection: Projection,
    service: str,
    clock: Clock,
    stopping: asyncio.Event,
    partition: Partition | None = None,
) -> AsyncIterator[ProjectionRuntime]:
    """Prepares the schema, then consumes the stream until `stopping` is set; stops in order.

    With a `partition` of N > 1, consumes only that partition's organizations (`shared/partitions.py`)."""
    partition = partition or Partition()
    own = consumer_settings(service, projection, partition)  # a bad setting refuses the start before any connection
    await declare_streams(settings.nats_url, settings.stream_replicas, partition.count)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=8)
    async with pool.acquire() as connection:
        await prepare(connection, projection)
    nc = await connect(settings.nats_url)
    consumer = ProjectionConsumer(nc.jetstream(), pool, projection, own, clock)
    runtime = ProjectionRuntime(pool, nc, consumer, Responder(nc), clock)
    runtime.in_background(telemetry.sample(service, stopping, telemetry.consumer_probe(consumer)))
    consuming = asyncio.create_task(consumer.run(stopping))
    try:
        yield runtime
    finally:
        await runtime.responder.stop()
        for task in runtime._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopping.set()
        await consuming
        await nc.flush(timeout=2)  # acks out; no drain: an idle pull subscription never drains
        await nc.close()
        await pool.close()


def consumer_settings(
    service: str, projection: Projection, partition: Partition, env: Mapping[str, str] | None = None
) -> ConsumerSettings:
    """The service's consumer, with the projection's own largest batch if it names one (`consumer_batch`):
    one that writes a batch in a few statements whatever its size catches up in fewer transactions;
    and its linger from `PROJECTION_LINGER_MS`."""
    settings = ConsumerSettings.for_service(service, partition)
    return dataclasses.replace(
        settings,
        batch_size=getattr(projection, "consumer_batch", settings.batch_size),
        linger=linger_from_env(os.environ if env is None else env),
    )


def linger_from_env(env: Mapping[str, str]) -> float:
    """`PROJECTION_LINGER_MS`, in seconds: whole milliseconds from 0 (fetch again at once) to
    `MAX_LINGER_MS`; unset or blank, `DEFAULT_LINGER`."""
    default_ms = round(DEFAULT_LINGER * 1000)
    return integer_setting(env, "PROJECTION_LINGER_MS", default_ms, 0, MAX_LINGER_MS) / 1000


def projection_routes(
    service: str,
    consumer: ProjectionConsumer,
    rebuilder: Rebuilder,
    dead_letters: DeadLetterDesk | None = None,
    status_details: StatusDetails | None = None,
) -> dict[str, Respond]:
    """The requests every projection answers, by subject:

    - `<service>.query.projection_status`: events applied and their lag, with `status_details`;
    - `<service>.query.health`: up, and which version;
    - `<service>.admin.rebuild`, `<service>.admin.rebuild_status`: replay the stream into a shadow
      schema and swap it in (`shared/rebuild.py`), and how far it is;
    - `<service>.admin.retry_dead_letter {sequence}`: retry a parked letter (`shared/dead_letters.py`).

    A partitioned instance refuses to rebuild: see `refuse_partitioned_rebuild`.
    """
    desk = dead_letters if dead_letters is not None else DeadLetterDesk(consumer)
    partition = consumer.settings.partition

    async def projection_status(_: q.EmptyRequest) -> dict[str, Any]:
        details = await status_details() if status_details is not None else {}
        return {**consumer.lag.summary(), **details}

    async def healthy(_: q.Health) -> dict[str, object]:
        return health(service)

    return {
        subjects.query(service, "projection_status"): reply_handler(q.EmptyRequest, projection_status),
        subjects.query(service, "health"): reply_handler(q.Health, healthy),
        f"{service}.admin.rebuild": reply_handler(
            q.EmptyRequest, refuse_partitioned_rebuild(service, partition) if partition.partitioned else rebuilder
        ),
        f"{service}.admin.rebuild_status": reply_handler(q.EmptyRequest, rebuilder.status),
        f"{service}.admin.retry_dead_letter": reply_handler(q.RetryDeadLetter, desk.retry),
    }


def refuse_partitioned_rebuild(service: str, partition: Partition) -> Callable[[q.EmptyRequest], Awaitable[dict[str, Any]]]:
    """A rebuild pauses only its own instance's consumer before it swaps the schema in; the other
    partitions' instances would go on writing into the schema being replaced, and what they applied
    in between would be lost. So a partitioned instance says no, and says what to do instead."""

    async def refuse(_: q.EmptyRequest) -> dict[str, Any]:
        raise Conflict(
            f"{service} runs as {partition.describe()}: a rebuild needs every instance stopped and one "
            "instance running with PARTITIONS=1 (see deploy/README.md, 'Partitions')"
        )

    return refuse


async def serve_routes(responder: Responder, queue_group: str, routes: Mapping[str, Respond]) -> None:
    for subject, respond in routes.items():
        await responder.serve(subject, queue_group, respond)
