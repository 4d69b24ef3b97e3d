"""Dead letters, one protocol: what a service parks on `deadletter.<service>` (stream `MEMBERSHIP_DLQ`),
how it is published, listed, and retried by an operator.

A dead letter is a message whose headers say whose it is, why, and what it stands for:

| header | value |
|---|---|
| `Nats-Msg-Id` | `<service>:<stream sequence>` or `<service>:<event_id>`: publishing twice parks once |
| `Dead-Letter-Service` | the service that parked it |
| `Dead-Letter-Kind` | what to do on retry: `event` (apply it again; also when the header is absent), `gap` (an event that waited too long for its organization's earlier one: apply it if that has come since) or a service's own kind (the notifier's `delivery`) |
| `Dead-Letter-Error` | the error, at most 1000 characters |
| `Original-Subject` | the event's subject on `MEMBERSHIP` |
| `Original-Stream-Sequence` | an `event`'s place on `MEMBERSHIP` |
| `Original-Event-Id` | a `delivery`'s event |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from . import live_schema, subjects
from .contract.events import Envelope, decode_envelope
from .contract.queries import RetryDeadLetter
from .errors import Conflict, NotFound

if TYPE_CHECKING:
    from .consumer import ProjectionConsumer

log = structlog.get_logger()

MSG_ID = "Nats-Msg-Id"
SERVICE = "Dead-Letter-Service"
KIND = "Dead-Letter-Kind"
ERROR = "Dead-Letter-Error"
ORIGINAL_SUBJECT = "Original-Subject"
ORIGINAL_STREAM_SEQUENCE = "Original-Stream-Sequence"
ORIGINAL_EVENT_ID = "Original-Event-Id"

EVENT = "event"  # the kind of an event the projection could not apply
GAP = "gap"  # the kind of an event parked while it waited for its organization's earlier one
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class DeadLetter:
    service: str
    kind: str
    key: str  # unique per service: the stream sequence of an event, the event_id of a delivery
    error: str
    original_subject: str
    body: bytes
    original_stream_sequence: int | None = None
    original_event_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {
            MSG_ID: f"{self.service}:{self.key}",
            SERVICE: self.service,
            KIND: self.kind,
            ERROR: self.error[:MAX_ERROR_CHARS],
            ORIGINAL_SUBJECT: self.original_subject,
        }
        if self.original_stream_sequence is not None:
            headers[ORIGINAL_STREAM_SEQUENCE] = str(self.original_stream_sequence)
        if self.original_event_id is not None:
            headers[ORIGINAL_EVENT_ID] = self.original_event_id
        return headers


async def publish(js: JetStreamContext, letter: DeadLetter) -> None:
    """Parks `letter` on `deadletter.<service>`; a repeat is dropped by its `Nats-Msg-Id`."""
    await js.publish(subjects.dead_letter(letter.service), letter.body, headers=letter.headers())


async def parked(js: JetStreamContext, service: str | None = None) -> list[dict[str, Any]]:
    """Every parked message (of one service, or all), oldest first, without its body."""
    try:
        info = await js.stream_info(subjects.DEAD_LETTER_STREAM)
    except nats.js.errors.NotFoundError:
        return []
    found: list[dict[str, Any]] = []
    if info.state.messages == 0:
        return found
    for sequence in range(max(1, info.state.first_seq), info.state.last_seq + 1):
        try:
            message = await js.get_msg(subjects.DEAD_LETTER_STREAM, sequence)
        except nats.js.errors.NotFoundError:
            continue
        headers = dict(message.headers or {})
        subject = message.subject or ""
        if service is None or subject == subjects.dead_letter(service):
            found.append(
                {
                    "sequence": sequence,
                    "service": headers.get(SERVICE, subject.rsplit(".", 1)[-1]),
                    "error": headers.get(ERROR, ""),
                    "original_subject": headers.get(ORIGINAL_SUBJECT, ""),
                    "original_stream_sequence": headers.get(ORIGINAL_STREAM_SEQUENCE, ""),
                }
            )
    return found


# A service's retry of its own kind of dead letter: given the letter's headers, what the reply says.
RetryKind = Callable[[Mapping[str, str]], Awaitable[dict[str, Any]]]


class DeadLetterDesk:
    """`<service>.admin.retry_dead_letter`: fetches the letter once, refuses what is not there or
    not this service's, retries it by its kind, then removes it from the queue.

    An `event` goes through the projection again; a service adds its own kinds in `kinds`."""

    def __init__(self, consumer: ProjectionConsumer, kinds: Mapping[str, RetryKind] | None = None) -> None:
        self.consumer = consumer
        self.kinds: dict[str, RetryKind] = dict(kinds or {})

    async def retry(self, request: RetryDeadLetter) -> dict[str, Any]:
        js, service = self.consumer.js, self.consumer.settings.service
        try:
            message = await js.get_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        except nats.js.errors.NotFoundError:
            raise NotFound(f"no dead letter #{request.sequence}") from None
        if message.subject != subjects.dead_letter(service):
            raise NotFound(f"dead letter #{request.sequence} is not {service}'s")
        headers = dict(message.headers or {})
        retry_kind = self.kinds.get(headers.get(KIND, EVENT))
        if retry_kind is not None:
            outcome = await retry_kind(headers)
        elif headers.get(KIND) == GAP:
            outcome = await self._apply_if_next(message)
        else:
            outcome = await self._apply_again(message)
        await js.delete_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        return {"retried": request.sequence, **outcome}

    async def _apply_if_next(self, message: RawStreamMsg) -> dict[str, Any]:
        """A `gap` letter: applied once its organization has reached the sequence before it; a
        duplicate if it has passed it; left on the queue, and refused, while the gap is still open."""
        event = _decoded(message)
        last = await self.consumer.apply_parked(event)
        if event.sequence > last + 1:
            raise Conflict(f"still waits for sequence {last + 1} of org {event.org_id} (it is {event.sequence}); left parked")
        return {"event_id": event.event_id, "applied": event.sequence == last + 1}

    async def _apply_again(self, message: RawStreamMsg) -> dict[str, Any]:
        event = _decoded(message)
        projection = self.consumer.projection
        async with (
            self.consumer.paused(),
            self.consumer.pool.acquire() as connection,
            live_schema.writing(connection, projection.schema),
        ):
            await projection.apply(connection, [event])
        return {"event_id": event.event_id}


def _decoded(message: RawStreamMsg) -> Envelope:
    try:
        return decode_envelope(message.data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as undecodable:
        raise Conflict(f"the message cannot be decoded: {undecodable}") from None
