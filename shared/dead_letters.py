"""The operators' side of dead letters: list what a service parked, and apply one again."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.js.errors

from . import subjects
from .consumer import ProjectionConsumer
from .contract.events import decode_envelope
from .contract.queries import RetryDeadLetter
from .errors import Conflict, NotFound


async def parked(js: Any, service: str | None = None) -> list[dict[str, Any]]:
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
        if service is None or message.subject == subjects.dead_letter(service):
            found.append(
                {
                    "sequence": sequence,
                    "service": headers.get("Dead-Letter-Service", message.subject.rsplit(".", 1)[-1]),
                    "error": headers.get("Dead-Letter-Error", ""),
                    "original_subject": headers.get("Original-Subject", ""),
                    "original_stream_sequence": headers.get("Original-Stream-Sequence", ""),
                }
            )
    return found


class DeadLetterDesk:
    """`<service>.admin.retry_dead_letter`: the event goes through the projection again, then leaves the queue."""

    def __init__(self, consumer: ProjectionConsumer) -> None:
        self.consumer = consumer

    async def retry(self, request: RetryDeadLetter) -> dict[str, Any]:
        js, service = self.consumer.js, self.consumer.settings.service
        try:
            message = await js.get_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        except nats.js.errors.NotFoundError:
            raise NotFound(f"no dead letter #{request.sequence}") from None
        if message.subject != subjects.dead_letter(service):
            raise NotFound(f"dead letter #{request.sequence} is not {service}'s")
        try:
            event = decode_envelope(message.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as undecodable:
            raise Conflict(f"the message cannot be decoded: {undecodable}") from None
        async with self.consumer.paused():
            async with self.consumer.pool.acquire() as connection, connection.transaction():
                await self.consumer.projection.apply(connection, [event])
        await js.delete_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        return {"retried": request.sequence, "event_id": event.event_id}
