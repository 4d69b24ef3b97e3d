"""Audit's requests: search, verify, the raw event, export, and the operators' rebuild and purge."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared import subjects
from shared.clock import Clock
from shared.consumer import ProjectionConsumer
from shared.contract import queries as q
from shared.projector import projection_routes, serve_routes
from shared.rebuild import Rebuilder
from shared.requests import reply_handler
from shared.responder import Responder

from .projection import LIVE_SCHEMA, AuditProjection
from .read_model import AuditReadModel
from .retention import purge, purge_live

QUEUE_GROUP = "audit"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class AuditHandlers:
    def __init__(self, read_model: AuditReadModel, consumer: ProjectionConsumer, clock: Clock) -> None:
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

    async def purge(self, _: q.EmptyRequest) -> Any:
        async with self.consumer.pool.acquire() as connection:
            return {"entries_removed": await purge_live(connection, LIVE_SCHEMA, self.clock.now())}

    async def _apply_retention(self, connection: asyncpg.Connection, shadow: AuditProjection) -> None:
        await purge(connection, shadow.schema, self.clock.now())

    async def subscribe(self, responder: Responder) -> None:
        routes = {
            subjects.query("audit", "search"): reply_handler(q.AuditSearch, self.search),
            subjects.query("audit", "verify"): reply_handler(q.AuditVerify, self.verify),
            subjects.query("audit", "get_event"): reply_handler(q.AuditGetEvent, self.get_event),
            subjects.query("audit", "export"): reply_handler(q.AuditExport, self.export),
            "audit.admin.purge": reply_handler(q.EmptyRequest, self.purge),
            **projection_routes("audit", self.consumer, self.rebuild),
        }
        await serve_routes(responder, QUEUE_GROUP, routes)
