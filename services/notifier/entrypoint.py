"""The notifier's requests: the contract's queries, and the operators' rebuild and dead-letter retry."""

from __future__ import annotations

from typing import Any

import asyncpg
import nats.js.errors

from shared import subjects
from shared.contract import queries as q
from shared.dead_letters import DeadLetterDesk
from shared.rebuild import Rebuilder
from shared.requests import reply_handler
from shared.responder import Responder
from shared.version import health

from .projection import LIVE_SCHEMA, NotifierProjection
from .read_model import NotifierReadModel
from .sender import DELIVERY_DEAD_LETTER, SENDING_LOCK, Sender

QUEUE_GROUP = "notifier"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class NotifierEndpoints:
    def __init__(self, read_model: NotifierReadModel, consumer: Any, sender: Sender) -> None:
        self.read_model = read_model
        self.consumer = consumer
        self.sender = sender
        # Never sends again: the shadow's deliveries take the live ones' state just before the swap.
        self.rebuild = Rebuilder(consumer, lambda: NotifierProjection(SHADOW_SCHEMA), LIVE_SCHEMA, carry_over)
        self.dead_letters = DeadLetterDesk(consumer)

    async def deliveries(self, query: q.DeliveriesQuery) -> Any:
        page = await self.read_model.deliveries(query)
        return {"deliveries": page.deliveries, "next_cursor": page.next_cursor}

    async def projection_status(self, _: q.Health) -> Any:
        return {**self.consumer.lag.summary(), "deliveries": await self.read_model.counts()}

    async def healthy(self, _: q.Health) -> Any:
        return health("notifier")

    async def retry_dead_letter(self, request: q.RetryDeadLetter) -> Any:
        """A failed delivery goes back to `pending` (once its address or the relay is fixed); an
        event the projection could not apply goes through it again, as in every service."""
        js = self.consumer.js
        try:
            message = await js.get_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        except nats.js.errors.NotFoundError:
            message = None
        headers = dict(message.headers or {}) if message is not None else {}
        if message is None or message.subject != subjects.dead_letter("notifier") or headers.get("Dead-Letter-Kind") != DELIVERY_DEAD_LETTER:
            return await self.dead_letters.retry(request)  # refuses what is not there or not ours
        event_id = headers["Original-Event-Id"]
        await self.sender.retry_failed(event_id)
        await js.delete_msg(subjects.DEAD_LETTER_STREAM, request.sequence)
        return {"retried": request.sequence, "event_id": event_id}

    async def subscribe(self, responder: Responder) -> None:
        handlers = {
            subjects.query("notifier", "deliveries"): reply_handler(q.DeliveriesQuery, self.deliveries),
            subjects.query("notifier", "projection_status"): reply_handler(q.Health, self.projection_status),
            subjects.query("notifier", "health"): reply_handler(q.Health, self.healthy),
            "notifier.admin.rebuild": reply_handler(q.Health, self.rebuild),
            "notifier.admin.rebuild_status": reply_handler(q.Health, self.rebuild.status),
            "notifier.admin.retry_dead_letter": reply_handler(q.RetryDeadLetter, self.retry_dead_letter),
        }
        for subject, handler in handlers.items():
            await responder.serve(subject, QUEUE_GROUP, handler)


async def carry_over(connection: asyncpg.Connection, shadow: NotifierProjection) -> None:
    """In the swap's transaction: wait for every send in progress (in any instance) to be settled,
    hold new ones back until the swap commits, and copy the live sending state into the shadow."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", SENDING_LOCK)
    await shadow.carry_over_delivery_state(connection, LIVE_SCHEMA)
