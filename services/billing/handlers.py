"""Billing's requests: the queries of the contract, and the operators' rebuild and renewal run."""

from __future__ import annotations

from typing import Any

from shared import subjects
from shared.clock import Clock
from shared.consumer import ProjectionConsumer
from shared.contract import queries as q
from shared.projector import projection_routes, serve_routes
from shared.rebuild import Rebuilder
from shared.requests import reply_handler
from shared.responder import Responder

from .projection import LIVE_SCHEMA, BillingProjection
from .read_model import BillingReadModel
from .renewals import RenewalScheduler

QUEUE_GROUP = "billing"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class BillingHandlers:
    def __init__(
        self, read_model: BillingReadModel, consumer: ProjectionConsumer, renewals: RenewalScheduler, clock: Clock
    ) -> None:
        self.read_model = read_model
        self.consumer = consumer
        self.renewals = renewals
        self.clock = clock
        self.rebuild = Rebuilder(consumer, lambda: BillingProjection(SHADOW_SCHEMA), LIVE_SCHEMA, renewals.renew_in)

    async def charges(self, query: q.ChargesQuery) -> Any:
        return await self.read_model.charges(query.org_id, query.limit, query.cursor)

    async def upcoming_invoice(self, query: q.UpcomingInvoiceQuery) -> Any:
        return await self.read_model.upcoming_invoice(query.org_id, self.clock.now())

    async def invoices(self, query: q.InvoicesQuery) -> Any:
        return await self.read_model.invoices(query.org_id, self.clock.now(), query.limit, query.cursor)

    async def renew(self, _: q.EmptyRequest) -> Any:
        return {"renewals_charged": await self.renewals.tick()}

    async def _pricing_mismatches(self) -> dict[str, Any]:
        return {"pricing_mismatches": await self.read_model.mismatch_count()}

    async def subscribe(self, responder: Responder) -> None:
        routes = {
            subjects.query("billing", "charges"): reply_handler(q.ChargesQuery, self.charges),
            subjects.query("billing", "upcoming_invoice"): reply_handler(q.UpcomingInvoiceQuery, self.upcoming_invoice),
            subjects.query("billing", "invoices"): reply_handler(q.InvoicesQuery, self.invoices),
            "billing.admin.renew": reply_handler(q.EmptyRequest, self.renew),
            **projection_routes("billing", self.consumer, self.rebuild, status_details=self._pricing_mismatches),
        }
        await serve_routes(responder, QUEUE_GROUP, routes)
