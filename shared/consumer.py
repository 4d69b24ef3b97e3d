"""Projecting the MEMBERSHIP stream into PostgreSQL: the discipline every consumer shares.

A durable pull consumer with `AckPolicy.ALL`, read in stream order. One asyncpg transaction per
batch applies the projection and records, per organization, the last `sequence` applied:
`sequence <= last` is a duplicate (skipped), `last + 1` is applied, a gap is nacked with a delay.
One ack per batch, after the commit, of the last message below which everything is handled
(`shared/acks.py`), so a crash between the two redelivers what the next run recognises as
duplicates. A message that keeps failing goes to the dead-letter stream with its error after
`max_attempts`, and the organization's position moves past it so later events apply. A message
that has waited for its gap longer than any legitimate gap takes (`ConsumerSettings.gap_patience`)
is parked too, as waiting for a gap, without moving the position: under the one ack it would
otherwise hold every organization's projection (`max_ack_pending`) for as long as the gap lasts.
The batches go through one connection the consumer holds (`HeldConnection`), not one taken from the
pool and given back each batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import asyncpg
import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, SequenceInfo

from . import dead_letters, live_schema, subjects, telemetry
from .acks import AckFrontier
from .cancellation import raise_if_cancel_pending
from .clock import Clock, SystemClock
from .contract.events import Envelope, decode_envelope, decode_typed_envelope
from .dead_letters import DeadLetter
from .durables import ensure_durable
from .metrics import LagRecorder
from .partitions import Partition, original_subject
from .pull import BatchPull

log = structlog.get_logger()

ACK, WAIT, FAIL = "ack", "wait", "fail"
# Positions a batch moved, as the arrays `moved_positions_sql` writes: organizations, their last sequences.
Moved = tuple[list[str], list[int]]


class Projection(Protocol):
    """A read model: its PostgreSQL schema, and how events change it.

    `apply` gets, inside one transaction, the events to apply in stream order (duplicates and
    events behind a gap already left out), so that it can write them in bulk."""

    schema: str

    async def create_tables(self, connection: asyncpg.Connection) -> None: ...

    async def apply(self, connection: asyncpg.Connection, events: list[Envelope]) -> None: ...


class PositionedProjection(Projection, Protocol):
    """A projection that takes the positions into its own statements (`PositionedBatch`): it reads them
    with its own state in its first statement and writes them with its rows in its last, two round
    trips a batch fewer than the consumer's own read and upsert around `apply`.

    `apply` stays: a retried dead letter goes through it, with the positions left where they are."""

    async def apply_positioned(self, connection: asyncpg.Connection, batch: PositionedBatch) -> None: ...


def envelope_decoder(projection: Projection) -> Callable[[bytes], Envelope]:
    """How a projection's messages are decoded: a projection that says `typed_events = True` reads
    only `typed_data()`, so its envelopes carry the typed data straight from the JSON; any other
    (audit reads `event.data` as a dict) gets the data as decoded."""
    return decode_typed_envelope if getattr(projection, "typed_events", False) else decode_envelope


DEFAULT_LINGER = 0.02  # seconds; `docs/decisions.md`, "Projectors linger"


@dataclass(frozen=True)
class ConsumerSettings:
    durable: str
    service: str
    batch_size: int = 100
    max_attempts: int = 5
    retry_delay: float = 1.0
    gap_delay: float = 0.5
    ack_wait: float = 5.0  # how long a crashed batch waits before it is delivered again
    # How long an event ahead of its organization's position is nak'd before it is parked as waiting
    # for a gap; None: `patience_for_gaps()`, from the settings above.
    gap_patience: float | None = None
    # Which organizations this instance owns: all of them (MEMBERSHIP itself) unless PARTITIONS > 1.
    partition: Partition = field(default_factory=Partition)
    # After a batch that did not fill, wait this long before fetching again, so that the next batch
    # gathers what arrives meanwhile. A projector that keeps up otherwise fetches, commits and acks
    # every event or two on its own; the lag it adds is at most this (`PROJECTION_LINGER_MS`).
    linger: float = DEFAULT_LINGER

    def patience_for_gaps(self) -> float:
        """Seconds an event waits for its gap before it is parked: four times the longest a legitimate
        gap lasts (a predecessor retried `max_attempts` times with backoff, then dead-lettered and
        passed; or one in a batch that died, delivered again after `ack_wait`)."""
        if self.gap_patience is not None:
            return self.gap_patience
        retries = self.retry_delay * (2 ** (self.max_attempts - 1) - 1)
        return 4 * (retries + self.ack_wait + self.gap_delay)

    def gap_deliveries(self) -> int:
        """The patience in deliveries: the server redelivers a nak'd event no sooner than `gap_delay`,
        so an event delivered this many times has waited at least `patience_for_gaps()` seconds
        (since its first delivery, restarts and handovers included: the server counts them)."""
        return math.ceil(self.patience_for_gaps() / self.gap_delay) + 1

    @classmethod
    def for_service(cls, service: str, partition: Partition | None = None) -> ConsumerSettings:
        """The durable a projector consumes through: `<service>`, or `<service>-p<p>` on a partitioned stream."""
        partition = partition or Partition()
        return cls(durable=partition.durable(service), service=service, partition=partition)


@dataclass
class Outcome:
    verdict: str
    error: str = ""


async def prepare(connection: asyncpg.Connection, projection: Projection) -> None:
    """The projection's schema, its tables and its per-organization positions.

    Instances that start together (the partitions of one projector) take turns: two concurrent
    `CREATE ... IF NOT EXISTS` of one name can still collide in PostgreSQL's catalog."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"prepare:{projection.schema}")
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{projection.schema}"')
        await connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{projection.schema}".positions (org_id text PRIMARY KEY, last_sequence bigint NOT NULL)'
        )
        await projection.create_tables(connection)


class HeldConnection:
    """A connection of the pool, held from batch to batch.

    Giving a connection back to an asyncpg pool resets it (`RESET ALL; CLOSE ALL; UNLISTEN *;
    pg_advisory_unlock_all()`): a round trip per batch, for session state the consumer never sets.
    Held, the connection is reset only when it is let go: after a failed transaction (whatever that
    left, the pool resets or replaces it), when it was lost (a PostgreSQL restart: the next
    transaction gets a new one), and when the consumer stops."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self._connection: asyncpg.Connection | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction writing the live projection (`live_schema.writing`: a rebuild's swap waits for it)."""
        try:
            connection = await self._get()
            async with live_schema.writing(connection, self.schema):
                yield connection
        except BaseException:
            await self.let_go()
            raise

    async def _get(self) -> asyncpg.Connection:
        if self._connection is not None and _lost(self._connection):
            await self.let_go()
        if self._connection is None:
            self._connection = await self.pool.acquire()
        return self._connection

    async def let_go(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await self.pool.release(connection)
            except Exception as failure:  # the pool terminated it; a new one comes with the next acquire
                log.warning("held connection not reset; dropped", error=repr(failure))


def _sequences(info: SequenceInfo | None) -> tuple[int, int]:
    """(stream, consumer) sequences of a consumer's `delivered` or `ack_floor`; 0 where absent."""
    return (info.stream_seq or 0, info.consumer_seq or 0) if info is not None else (0, 0)


def _lost(connection: asyncpg.Connection) -> bool:
    try:
        return connection.is_closed()
    except asyncpg.InterfaceError:  # terminated, asyncpg gave it back to the pool itself: lost too
        return True


class ProjectionConsumer:
    FETCH_WAIT = 1.0  # seconds an idle fetch waits for the stream's next message

    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        projection: Projection,
        settings: ConsumerSettings,
        clock: Clock | None = None,
    ) -> None:
        self.js = js
        self.pool = pool
        self.projection = projection
        self.settings = settings
        self.clock = clock or SystemClock()
        self.lag = LagRecorder()
        self.metrics = telemetry.ConsumerMetrics(settings.durable)
        self.decode = envelope_decoder(projection)
        self.connection = HeldConnection(pool, projection.schema)
        self._turn = asyncio.Lock()
        self._pull: BatchPull | None = None  # while this instance pulls
        self.acks: AckFrontier[Msg] = AckFrontier()
        # Events applied (or found applied) and not yet acked, by stream sequence: measured when an ack covers them.
        self._to_measure: dict[int, datetime] = {}
        # Organizations with an event parked for a gap, and the sequence they wait for (this process only).
        self._stuck: dict[str, int] = {}

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No batch is in progress, and none starts, while this is held. A fetch waiting for the
        stream's next message is cut short, not waited out (`FETCH_WAIT`): a rebuild's swap or an
        operator's retry would otherwise wait up to that long on an idle projector."""
        if self._pull is not None:
            self._pull.cut_short()
        async with self._turn:
            yield

    @staticmethod
    def consumer_config(settings: ConsumerSettings) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=settings.durable,
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait,
            max_ack_pending=settings.batch_size * 10,
            filter_subject=settings.partition.filter_subject,
        )

    async def subscribe(self) -> BatchPull:
        """The durable (created when missing, moved to `AckPolicy.ALL`) and a puller of batches from it."""
        stream, durable = self.settings.partition.stream, self.settings.durable
        async with self.pool.acquire() as connection:
            info = await ensure_durable(self.js, connection, stream, self.consumer_config(self.settings))
        delivered, floor = _sequences(info.delivered), _sequences(info.ack_floor)
        self.acks.resume(delivered[1], floor[1], info.num_ack_pending or 0)
        self._to_measure.clear()
        self.metrics.acked(floor[0], [])
        pull = BatchPull(self.js._nc, stream, durable, self.js._prefix)
        await pull.start()
        return pull

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until `stop` is set (within `FETCH_WAIT`: a fetch's longest wait)."""
        async with self.pool.acquire() as connection:
            await prepare(connection, self.projection)
        while not stop.is_set():
            try:
                await self._pull_while_alone(stop)
            except Exception as unavailable:  # PostgreSQL or NATS restarting: queue for the lock again
                log.warning("pulling stopped; starting again", error=repr(unavailable))
                await asyncio.sleep(self.settings.retry_delay)

    async def _pull_while_alone(self, stop: asyncio.Event) -> None:
        async with self._pulling_alone(stop) as lock:
            if lock is None:
                return
            pull = self._pull = await self.subscribe()
            try:
                while not stop.is_set() and not _lost(lock):
                    raise_if_cancel_pending()  # one nats-py's wait_for swallowed (consumer_info, on 3.11)
                    async with self._turn:
                        fetched = await self._take_a_turn(pull)
                    if 0 < fetched < self.settings.batch_size:  # caught up: let the next batch gather
                        await _unless_stopped(stop, self.settings.linger)
            finally:
                self._pull = None
                await pull.stop()
                await self.connection.let_go()

    @asynccontextmanager
    async def _pulling_alone(self, stop: asyncio.Event) -> AsyncIterator[asyncpg.Connection | None]:
        """One instance pulls a durable at a time; the others stand by (None once `stop` is set).

        Not for safety (`shared/acks.py` never acks what this process has not handled, whoever else
        pulls) but for progress: two instances each taking part of the deliveries would each miss
        the other's, and neither would ack. The lock lives with its connection; lost, the instance
        stops pulling and queues for it again."""
        key = f"pull:{self.settings.partition.stream}:{self.settings.durable}"
        while not stop.is_set():
            connection = await self.pool.acquire()
            try:
                if await connection.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                    yield connection
                    return
            finally:
                try:
                    await self.pool.release(connection)  # the reset unlocks
                except Exception as failure:
                    log.warning("pull lock connection not reset; dropped", error=repr(failure))
            await _unless_stopped(stop, self.settings.retry_delay)
        yield None

    async def _take_a_turn(self, pull: BatchPull) -> int:
        """Fetches a batch and settles it; how many messages it fetched."""
        try:
            messages = await pull.fetch(self.settings.batch_size, timeout=self.FETCH_WAIT)
        except Exception as unavailable:  # NATS restarting, a cluster electing a leader: wait, fetch again
            log.warning("fetch failed; retrying", error=repr(unavailable))
            await asyncio.sleep(self.settings.retry_delay)
            return 0
        try:
            if messages:
                await self.handle(messages)
            if not self.acks.knows_all:
                await self._confirm_pending()
        except Exception:
            # What was committed but not acked comes back after ack_wait and is skipped then.
            log.exception("batch not settled; its messages will be redelivered")
            await asyncio.sleep(self.settings.retry_delay)
            return 0
        return len(messages)

    async def _confirm_pending(self) -> None:
        """After a restart or a delivery this process did not see: does it hold every pending message?"""
        info = await self.js.consumer_info(self.settings.partition.stream, self.settings.durable)
        (floor, floor_delivery), (_, delivered) = _sequences(info.ack_floor), _sequences(info.delivered)
        self.acks.confirm(floor, floor_delivery, delivered, info.num_ack_pending or 0)
        self._measure(floor, acked_here=False)
        await self._ack_handled()

    async def _ack_handled(self) -> None:
        """Acks what is handled, if anything, and measures what the ack covers."""
        message = self.acks.to_ack()
        if message is None:
            return
        await message.ack()
        self._measure(int(message.metadata.sequence.stream))

    async def handle(self, messages: list[Msg]) -> None:
        """Applies a fetched batch in order, naks what waits, then acks once what is handled."""
        self.acks.received(messages)
        events: list[tuple[Msg, Envelope]] = []
        for message in messages:
            try:
                events.append((message, self.decode(message.data)))
            except (msgspec.DecodeError, msgspec.ValidationError) as undecodable:
                await self._dead_letter(message, None, f"undecodable envelope: {undecodable}")
                self.acks.settled(message)
        try:
            outcomes = await self._apply_in_one_transaction(events)
        except Exception:
            outcomes = await self._apply_one_by_one(events)
        for message, event in events:
            await self._settle(message, event, outcomes[id(message)])
        await self._ack_handled()

    async def _apply_in_one_transaction(self, events: list[tuple[Msg, Envelope]]) -> dict[int, Outcome]:
        async with self.connection.transaction() as connection:
            return await self._apply(connection, events)

    async def _apply_one_by_one(self, events: list[tuple[Msg, Envelope]]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        failed_orgs: set[str] = set()
        for message, event in events:
            if event.org_id in failed_orgs:
                outcomes[id(message)] = Outcome(WAIT)
                continue
            try:
                outcomes.update(await self._apply_in_one_transaction([(message, event)]))
            except Exception as failure:
                log.warning("projection failed", event_id=event.event_id, org_id=event.org_id, error=repr(failure))
                outcomes[id(message)] = Outcome(FAIL, repr(failure))
                failed_orgs.add(event.org_id)
        return outcomes

    async def _apply(self, connection: asyncpg.Connection, events: list[tuple[Msg, Envelope]]) -> dict[int, Outcome]:
        verdicts = await apply_in_order(connection, self.projection, [event for _, event in events])
        return {id(message): Outcome(verdict) for (message, _), verdict in zip(events, verdicts, strict=False)}

    async def _settle(self, message: Msg, event: Envelope, outcome: Outcome) -> None:
        """Marks the message handled, naks it or parks it.

        A handled message is acked with the batch's one ack; a nak'd one holds that ack below it."""
        self._forget_a_gap_that_filled(event, outcome)
        if outcome.verdict == ACK:
            self.acks.settled(message)
            self._to_measure[message.metadata.sequence.stream] = event.occurred_at
            return
        if outcome.verdict == WAIT and await self._gap_known_lasting(event):
            await self._park_waiting(message, event)  # its organization's gap outlasted gap_patience already
            self.acks.settled(message)
        elif outcome.verdict == WAIT and message.metadata.num_delivered >= self.settings.gap_deliveries():
            await self._park_waiting(message, event)
            self.acks.settled(message)
        elif outcome.verdict == WAIT:
            await message.nak(delay=self.settings.gap_delay)
        elif message.metadata.num_delivered >= self.settings.max_attempts:
            await self._dead_letter(message, event, outcome.error)
            self.acks.settled(message)
        else:
            await message.nak(delay=self.settings.retry_delay * 2 ** (message.metadata.num_delivered - 1))

    def _measure(self, through: int, acked_here: bool = True) -> None:
        """The durable is acked through stream sequence `through`: the position, and the lag of each event
        applied here that the ack covers, against one reading of the clock (once per event: an event
        applied but not acked comes back as a duplicate and is measured when it is acked). Below an ack
        floor another instance moved (`acked_here` False) the events are forgotten unmeasured."""
        covered = [s for s in self._to_measure if s <= through]
        occurred = [self._to_measure.pop(s) for s in covered]
        lags: list[float] = []
        if occurred and acked_here:
            now = self.clock.now()
            lags = [(now - at).total_seconds() for at in occurred]
            self.lag.record_seconds(lags)
        self.metrics.acked(through, lags)

    def _forget_a_gap_that_filled(self, event: Envelope, outcome: Outcome) -> None:
        """The sequence a stuck organization waited for has come (applied or not: one failing is retried,
        and what follows it waits behind it, not parked), or the organization is past it."""
        waits_for = self._stuck.get(event.org_id)
        if waits_for is not None and (event.sequence == waits_for or (outcome.verdict == ACK and event.sequence > waits_for)):
            del self._stuck[event.org_id]

    async def _gap_known_lasting(self, event: Envelope) -> bool:
        """Whether `event`'s organization had an event parked for the gap it waits at: a gap that outlasted
        gap_patience is not waited for again (each wait would hold every organization's ack). Known to
        this process only; forgotten once the organization's position has moved."""
        waits_for = self._stuck.get(event.org_id)
        if waits_for is None:
            return False
        if await self._waits_for(event.org_id) == waits_for:
            return True
        del self._stuck[event.org_id]
        return False

    async def _waits_for(self, org_id: str) -> int:
        async with self.pool.acquire() as connection:
            last = await connection.fetchval(
                f'SELECT last_sequence FROM "{self.projection.schema}".positions WHERE org_id = $1', org_id
            )
        return int(last or 0) + 1

    async def _dead_letter(self, message: Msg, event: Envelope | None, error: str) -> None:
        """Parks the message with its error, and moves the organization past it.

        Named by its subject and sequence on MEMBERSHIP, also when it came through a partition. Not
        termed: under `AckPolicy.ALL` a term acknowledges every message below it; the batch's ack
        covers it once everything below it is handled."""
        stream_sequence = membership_sequence(message, self.settings.partition)
        letter = DeadLetter(
            service=self.settings.service,
            kind=dead_letters.EVENT,
            key=str(stream_sequence),
            error=error,
            original_subject=original_subject(message.subject),
            body=message.data,
            original_stream_sequence=stream_sequence,
        )
        await dead_letters.publish(self.js, letter)
        if event is not None:
            async with self.pool.acquire() as connection, live_schema.writing(connection, self.projection.schema):
                _, skipped = await sort_out(connection, self.projection.schema, [event])
                await save_positions(connection, self.projection.schema, skipped)
        telemetry.dead_lettered(self.settings.durable)
        log.error("dead-lettered", subject=message.subject, error=error)

    async def _park_waiting(self, message: Msg, event: Envelope) -> None:
        """Parks an event that has waited too long for its gap, as waiting; its organization's
        position stays (a bogus event far ahead must not make the real ones duplicates). Retried, it
        applies if its gap has filled by then (`apply_parked`)."""
        stream_sequence = membership_sequence(message, self.settings.partition)
        waits_for = await self._waits_for(event.org_id)
        letter = DeadLetter(
            service=self.settings.service,
            kind=dead_letters.GAP,
            key=str(stream_sequence),
            error=(
                f"waits for sequence {waits_for} of org {event.org_id} since {message.metadata.timestamp:%Y-%m-%dT%H:%M:%SZ}"
                f" (it is sequence {event.sequence}; parked after {message.metadata.num_delivered} deliveries)"
            ),
            original_subject=original_subject(message.subject),
            body=message.data,
            original_stream_sequence=stream_sequence,
        )
        await dead_letters.publish(self.js, letter)
        self._stuck[event.org_id] = waits_for
        telemetry.dead_lettered(self.settings.durable)
        log.error("parked waiting for a gap", subject=message.subject, org_id=event.org_id, waits_for=waits_for)

    async def apply_parked(self, event: Envelope) -> int:
        """A parked event applied if it is next for its organization; the position it found (so: a
        duplicate if `event.sequence <=` it, still waiting, and nothing done, if above it + 1)."""
        schema = self.projection.schema
        async with self.paused(), self.pool.acquire() as connection, live_schema.writing(connection, schema):
            last: int = (
                await connection.fetchval(  # locked: the instance pulling may be applying this organization
                    f'SELECT last_sequence FROM "{schema}".positions WHERE org_id = $1 FOR UPDATE', event.org_id
                )
                or 0
            )
            if event.sequence == last + 1:
                await apply_in_order(connection, self.projection, [event])
            return last


SOURCE_HEADER = "Nats-Stream-Source"  # set by JetStream on a sourced message: "<stream> <sequence> ..."


def membership_sequence(message: Msg, partition: Partition) -> int:
    """The message's sequence on MEMBERSHIP: its own, or, sourced into a partitioned stream, its origin's."""
    source = (message.headers or {}).get(SOURCE_HEADER, "").split() if partition.partitioned else []
    if len(source) >= 2 and source[0] == subjects.STREAM and source[1].isdigit():
        return int(source[1])
    return int(message.metadata.sequence.stream)


async def apply_in_order(connection: asyncpg.Connection, projection: Projection, events: list[Envelope]) -> list[str]:
    """Applies what is next for each organization and moves its position; a verdict per event."""
    apply_positioned = getattr(projection, "apply_positioned", None)
    if apply_positioned is not None:
        batch = PositionedBatch(events)
        await apply_positioned(connection, batch)
        return batch.verdicts()
    verdicts, to_apply = await sort_out(connection, projection.schema, events)
    await projection.apply(connection, to_apply)
    await save_positions(connection, projection.schema, to_apply)
    return verdicts


class PositionedBatch:
    """A batch's events against the organizations' positions, for a `PositionedProjection`.

    The projection reads the positions of `org_ids` locked for the transaction (`locked_positions_sql`,
    in a `WITH` beside its own state), gives them to `sort_out`, applies the events that returns, and
    writes `moved()` in one of its statements (`moved_positions_sql`). `verdicts` refuses a batch whose
    positions were not read, or whose applied events' positions were not written."""

    def __init__(self, events: list[Envelope]) -> None:
        self.events = events
        self.org_ids = list(dict.fromkeys(event.org_id for event in events))
        self._verdicts: list[str] | None = None
        self._to_apply: list[Envelope] = []
        self._written = False

    def sort_out(self, positions: Mapping[str, int]) -> list[Envelope]:
        """The events to apply, in order, given each organization's last sequence applied (absent: none)."""
        self._verdicts, self._to_apply = verdicts_against(positions, self.events)
        return self._to_apply

    def moved(self) -> Moved:
        """The applied organizations and their new positions, as the two arrays `moved_positions_sql` takes."""
        if self._verdicts is None:
            raise RuntimeError("the positions are moved after sort_out")
        last = {event.org_id: event.sequence for event in self._to_apply}
        self._written = True
        return list(last), list(last.values())

    def verdicts(self) -> list[str]:
        if self._verdicts is None or (self._to_apply and not self._written):
            raise RuntimeError("a positioned projection reads the positions (sort_out) and writes them (moved)")
        return self._verdicts


def locked_positions_sql(schema: str, org_ids: int) -> str:
    """The positions of the organizations in the text array `$<org_ids>`, locked for the transaction."""
    return f'SELECT org_id, last_sequence FROM "{schema}".positions WHERE org_id = ANY(${org_ids}::text[]) FOR UPDATE'


def moved_positions_sql(schema: str, org_ids: int, sequences: int) -> str:
    """Writes the positions in the arrays `$<org_ids>` and `$<sequences>` (for a `WITH`, or alone)."""
    return (
        f'INSERT INTO "{schema}".positions (org_id, last_sequence) '
        f"SELECT * FROM unnest(${org_ids}::text[], ${sequences}::bigint[]) "
        "ON CONFLICT (org_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence"
    )


async def read_positions(connection: asyncpg.Connection, schema: str, org_ids: list[str]) -> dict[str, int]:
    """The organizations' positions, locked for this transaction (absent: nothing applied yet)."""
    rows = await connection.fetch(locked_positions_sql(schema, 1), org_ids)
    return {row["org_id"]: row["last_sequence"] for row in rows}


async def sort_out(connection: asyncpg.Connection, schema: str, events: list[Envelope]) -> tuple[list[str], list[Envelope]]:
    """Each event's verdict against the positions (locked for this transaction), and those to apply."""
    return verdicts_against(await read_positions(connection, schema, list({event.org_id for event in events})), events)


def verdicts_against(positions: Mapping[str, int], events: list[Envelope]) -> tuple[list[str], list[Envelope]]:
    """Per event: a duplicate (at or below its organization's position) or next is ACK, past a gap WAIT;
    and the events to apply, each organization's next ones in order."""
    positions = dict(positions)
    verdicts, to_apply = [], []
    for event in events:
        last = positions.get(event.org_id, 0)
        if event.sequence <= last:
            verdicts.append(ACK)
        elif event.sequence == last + 1:
            verdicts.append(ACK)
            to_apply.append(event)
            positions[event.org_id] = event.sequence
        else:
            verdicts.append(WAIT)
    return verdicts, to_apply


async def save_positions(connection: asyncpg.Connection, schema: str, applied: list[Envelope]) -> None:
    last = {event.org_id: event.sequence for event in applied}
    if last:  # one statement for the batch, not one per organization
        await connection.execute(moved_positions_sql(schema, 1, 2), list(last), list(last.values()))


async def _unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Waits `seconds`, or until `stop` is set if that comes first."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # not wait_for: it can drop a cancel on 3.11
            await stop.wait()
