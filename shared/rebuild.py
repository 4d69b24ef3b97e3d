"""Rebuilding a projection from the first message of the stream, while the live one keeps answering.

The events are replayed into a shadow schema (without the indexes the projection names in
`deferred_indexes`, built once the replay has caught up); then, with the live schema's writers held
off in every process (`live_schema.lock_for_swap`, the instance pulling may be another one), the
shadow catches up with the stream's end and takes the live schema's name in one transaction. The live
consumer resumes on the rebuilt positions and skips what the rebuild already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from . import subjects
from .consumer import WAIT, Projection, ProjectionConsumer, apply_in_order, envelope_decoder, prepare
from .contract.events import Envelope
from .errors import Conflict
from .live_schema import lock_for_swap
from .pull import BatchPull

log = structlog.get_logger()

REPLAY_BATCH = 2000
Finish = Callable[[asyncpg.Connection, Any], Awaitable[None]]


class ReplayGap(Conflict):
    """The stream lacks an organization's earlier events: the shadow cannot be whole, so no swap."""


@dataclass(frozen=True)
class RebuildReport:
    events: int
    undecodable: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        rate = self.events / self.seconds if self.seconds else 0.0
        return {
            "events": self.events,
            "undecodable": self.undecodable,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(rate, 1),
        }


async def rebuild(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    shadow: Projection,
    live_schema: str,
    pause_live: Callable[[], AbstractAsyncContextManager[None]],
    finish: Finish | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RebuildReport:
    started = time.perf_counter()
    deferred: dict[str, str] = getattr(shadow, "deferred_indexes", {})
    async with pool.acquire() as connection:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{shadow.schema}" CASCADE')
        await prepare(connection, shadow)
        for name in deferred:
            await connection.execute(f'DROP INDEX "{shadow.schema}"."{name}"')
    replay = Replay(js, pool, shadow, on_progress)
    await replay.start()
    try:
        await replay.until(await _last_sequence(js))
        async with pool.acquire() as connection:  # before the pause: the live service goes on answering meanwhile
            for sql in deferred.values():
                await connection.execute(sql.format(schema=f'"{shadow.schema}"'))
        async with pause_live(), pool.acquire() as connection, connection.transaction():
            # Locked before the final catch-up: what any instance applied to the live schema is in the
            # stream by then, so in the replay; what comes after waits, and applies to the rebuilt schema.
            await lock_for_swap(connection, live_schema)
            await replay.until(await _last_sequence(js))
            if finish is not None:
                await finish(connection, shadow)
            await _swap(connection, shadow.schema, live_schema)
    finally:
        await replay.stop()
    report = RebuildReport(replay.events, replay.undecodable, time.perf_counter() - started)
    log.info("rebuilt", schema=live_schema, **report.as_dict())
    return report


class Rebuilder:
    """A service's rebuild request: one at a time, the live consumer paused only for the swap."""

    def __init__(
        self, consumer: ProjectionConsumer, make_shadow: Callable[[], Projection], live_schema: str, finish: Finish | None = None
    ) -> None:
        self.consumer = consumer
        self.make_shadow = make_shadow
        self.live_schema = live_schema
        self.finish = finish
        self._running = asyncio.Lock()
        self.replayed = 0
        self.target = 0

    async def __call__(self, _: Any = None) -> dict[str, Any]:
        if self._running.locked():
            raise Conflict("a rebuild is already running")
        async with self._running:
            self.replayed, self.target = 0, await _last_sequence(self.consumer.js)
            report = await rebuild(
                self.consumer.js,
                self.consumer.pool,
                self.make_shadow(),
                self.live_schema,
                self.consumer.paused,
                self.finish,
                on_progress=self._progress,
            )
        return report.as_dict()

    def _progress(self, replayed: int) -> None:
        self.replayed = replayed

    async def status(self, _: Any = None) -> dict[str, Any]:
        """For a progress display: how far a running rebuild is."""
        return {"running": self._running.locked(), "events_replayed": self.replayed, "stream_messages": self.target}


class Replay:
    """Every message of the stream, in order, through an ephemeral consumer without acks.

    The next batch is fetched and decoded while the current one is written: the replay waits on
    PostgreSQL and on NATS at the same time, not one after the other."""

    def __init__(
        self, js: JetStreamContext, pool: asyncpg.Pool, projection: Projection, on_progress: Callable[[int], None] | None
    ) -> None:
        self.js = js
        self.pool = pool
        self.projection = projection
        self.on_progress = on_progress
        self.events = 0
        self.undecodable = 0
        self.position = 0
        self._consumer: str | None = None
        self._pull: BatchPull | None = None
        self._next: asyncio.Task[Batch] | None = None
        self._decode = envelope_decoder(projection)

    async def start(self) -> None:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0, max_ack_pending=-1
        )
        config.filter_subject = subjects.EVENTS_WILDCARD
        self._consumer = (await self.js.add_consumer(subjects.STREAM, config)).name
        self._pull = BatchPull(self.js._nc, subjects.STREAM, self._consumer, self.js._prefix)
        await self._pull.start()

    async def stop(self) -> None:
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._next
        if self._pull is not None:
            await self._pull.stop()
        if self._consumer is not None:  # it would go by itself once inactive; no need to wait for that
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(subjects.STREAM, self._consumer)

    async def until(self, last_sequence: int) -> None:
        while self.position < last_sequence:
            batch = await self._take_next()
            if batch.position < last_sequence:  # more to come: fetch it while this batch is written
                self._next = asyncio.create_task(self._fetch())
            await self._apply(batch)

    async def _take_next(self) -> Batch:
        task, self._next = self._next, None
        return await (task if task is not None else self._fetch())

    async def _fetch(self) -> Batch:
        assert self._pull is not None, "Replay.start first"
        while True:
            messages = await self._pull.fetch(REPLAY_BATCH, timeout=2.0)
            if messages:
                return Batch.of(messages, self._decode)

    async def _apply(self, batch: Batch) -> None:
        # Each batch commits durably: a batch lost to a PostgreSQL crash after its commit would leave a
        # hole the next batches cannot see, and the swap would make it live.
        async with self.pool.acquire() as connection, connection.transaction():
            verdicts = await apply_in_order(connection, self.projection, batch.events)
        if WAIT in verdicts:  # the stream holds every organization's events in order, without a gap
            event = batch.events[verdicts.index(WAIT)]
            raise ReplayGap(
                f"the stream lacks events of {event.org_id} before its event {event.sequence}: "
                "the rebuild stopped, the live projection is unchanged"
            )
        self.events += len(batch.events)
        self.undecodable += batch.undecodable
        self.position = batch.position
        if self.on_progress is not None:
            self.on_progress(self.events)


@dataclass(frozen=True)
class Batch:
    """A fetched batch, decoded: its events, how many messages were not, and its last stream sequence."""

    events: list[Envelope]
    undecodable: int
    position: int

    @classmethod
    def of(cls, messages: list[Any], decode: Callable[[bytes], Envelope]) -> Batch:
        events = []
        for message in messages:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                events.append(decode(message.data))
        return cls(events, len(messages) - len(events), messages[-1].metadata.sequence.stream)


async def _last_sequence(js: JetStreamContext) -> int:
    return (await js.stream_info(subjects.STREAM)).state.last_seq


async def _swap(connection: asyncpg.Connection, shadow_schema: str, live_schema: str) -> None:
    retired = f"{live_schema}_retired"
    await connection.execute(f'DROP SCHEMA IF EXISTS "{retired}" CASCADE')
    await connection.execute(f'ALTER SCHEMA "{live_schema}" RENAME TO "{retired}"')
    await connection.execute(f'ALTER SCHEMA "{shadow_schema}" RENAME TO "{live_schema}"')
    await connection.execute(f'DROP SCHEMA "{retired}" CASCADE')
