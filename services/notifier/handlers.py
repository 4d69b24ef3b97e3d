"""The notifier's requests: the contract's queries, and the operators' rebuild and dead-letter retry."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared import subjects
from shared.consumer import ProjectionConsumer
from shared.contract import queries as q
from shared.dead_letters import DeadLetterDesk
from shared.projector import projection_routes, serve_routes
from shared.rebuild import Rebuilder
from shared.requests import reply_handler
from shared.responder import Responder

from .projection import LIVE_SCHEMA, NotifierProjection
from .read_model import NotifierReadModel
from .sender import DELIVERY_DEAD_LETTER, Sender
from .store import DeliveryStore

QUEUE_GROUP = "notifier"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class NotifierHandlers:
    def __init__(self, read_model: NotifierReadModel, consumer: ProjectionConsumer, sender: Sender) -> None:
        self.read_model = read_model
        self.consumer = consumer
        self.sender = sender
        # Never sends again: the shadow's deliveries take the live ones' state just before the swap.
        self.rebuild = Rebuilder(consumer, lambda: NotifierProjection(SHADOW_SCHEMA), LIVE_SCHEMA, carry_over)
        # A failed delivery goes back to `pending` (once its address or the relay is fixed); an
        # event the projection could not apply goes through it again, as in every service.
        self.dead_letters = DeadLetterDesk(consumer, {DELIVERY_DEAD_LETTER: sender.retry_dead_letter})

    async def deliveries(self, query: q.DeliveriesQuery) -> Any:
        page = await self.read_model.deliveries(query)
        return {"deliveries": page.deliveries, "next_cursor": page.next_cursor}

    async def _deliveries_by_status(self) -> dict[str, Any]:
        return {"deliveries": await self.read_model.counts()}

    async def subscribe(self, responder: Responder) -> None:
        routes = {
            subjects.query("notifier", "deliveries"): reply_handler(q.DeliveriesQuery, self.deliveries),
            **projection_routes("notifier", self.consumer, self.rebuild, self.dead_letters, self._deliveries_by_status),
        }
        await serve_routes(responder, QUEUE_GROUP, routes)


async def carry_over(connection: asyncpg.Connection, shadow: NotifierProjection) -> None:
    """In the swap's transaction: wait for every send in progress (in any instance) to be settled,
    hold new ones back until the swap commits, and copy the live sending state into the shadow."""
    await DeliveryStore.hold_back_sending(connection)
    await shadow.deliveries.carry_over(connection, LIVE_SCHEMA)
