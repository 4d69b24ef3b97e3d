"""Audit's requests: search, verify, the raw event, export, and the operators' rebuild and purge."""

from __future__ import annotations

from typing import Any

from shared import subjects
from shared.clock import Clock
from shared.contract import queries as q
from shared.dead_letters import DeadLetterDesk
from shared.rebuild import Rebuilder
from shared.requests import reply_handler
from shared.responder import Responder
from shared.version import health

from .projection import LIVE_SCHEMA, AuditProjection
from .read_model import AuditReadModel
from .retention import purge

QUEUE_GROUP = "audit"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class AuditEndpoints:
    def __init__(self, read_model: AuditReadModel, consumer: Any, clock: Clock) -> None:
        self.read_model = read_model
        self.consumer = consumer
        self.clock = clock
        self.rebuild = Rebuilder(consumer, lambda: AuditProjection(SHADOW_SCHEMA), LIVE_SCHEMA, self._apply_retention)

    async def search(self, query: q.AuditSearch) -> Any:
        return await self.read_model.search(query)

    async def verify(self, query: q.AuditVerify) -> Any:
        return await self.read_model.verify(query.org_id)

    async def get_event(self, query: q.AuditGetEvent) -> Any:
        return await self.read_model.get_event(query.event_id)

    async def export(self, query: q.AuditExport) -> Any:
        return await self.read_model.export(query)

    async def projection_status(self, _: q.Health) -> Any:
        return self.consumer.lag.summary()

    async def healthy(self, _: q.Health) -> Any:
        return health("audit")

    async def purge(self, _: q.Health) -> Any:
        async with self.consumer.pool.acquire() as connection:
            return {"entries_removed": await purge(connection, LIVE_SCHEMA, self.clock.now())}

    async def _apply_retention(self, connection: Any, shadow: AuditProjection) -> None:
        await purge(connection, shadow.schema, self.clock.now())

    async def subscribe(self, responder: Responder) -> None:
        handlers = {
            subjects.query("audit", "search"): reply_handler(q.AuditSearch, self.search),
            subjects.query("audit", "verify"): reply_handler(q.AuditVerify, self.verify),
            subjects.query("audit", "get_event"): reply_handler(q.AuditGetEvent, self.get_event),
            subjects.query("audit", "export"): reply_handler(q.AuditExport, self.export),
            subjects.query("audit", "projection_status"): reply_handler(q.Health, self.projection_status),
            subjects.query("audit", "health"): reply_handler(q.Health, self.healthy),
            "audit.admin.rebuild": reply_handler(q.Health, self.rebuild),
            "audit.admin.rebuild_status": reply_handler(q.Health, self.rebuild.status),
            "audit.admin.retry_dead_letter": reply_handler(q.RetryDeadLetter, DeadLetterDesk(self.consumer).retry),
            "audit.admin.purge": reply_handler(q.Health, self.purge),
        }
        for subject, handler in handlers.items():
            await responder.serve(subject, QUEUE_GROUP, handler)
