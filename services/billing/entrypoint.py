"""Billing's requests: the queries of the contract, and the operators' rebuild and renewal run."""

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

from .projection import LIVE_SCHEMA, BillingProjection
from .read_model import BillingReadModel
from .renewals import RenewalScheduler

QUEUE_GROUP = "billing"
SHADOW_SCHEMA = f"{LIVE_SCHEMA}_rebuild"


class BillingEndpoints:
    def __init__(self, read_model: BillingReadModel, consumer: Any, renewals: RenewalScheduler, clock: Clock) -> None:
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

    async def projection_status(self, _: q.Health) -> Any:
        return {**self.consumer.lag.summary(), "pricing_mismatches": await self.read_model.mismatch_count()}

    async def healthy(self, _: q.Health) -> Any:
        return health("billing")

    async def renew(self, _: q.Health) -> Any:
        return {"renewals_charged": await self.renewals.tick()}

    async def subscribe(self, responder: Responder) -> None:
        handlers = {
            subjects.query("billing", "charges"): reply_handler(q.ChargesQuery, self.charges),
            subjects.query("billing", "upcoming_invoice"): reply_handler(q.UpcomingInvoiceQuery, self.upcoming_invoice),
            subjects.query("billing", "invoices"): reply_handler(q.InvoicesQuery, self.invoices),
            subjects.query("billing", "projection_status"): reply_handler(q.Health, self.projection_status),
            subjects.query("billing", "health"): reply_handler(q.Health, self.healthy),
            "billing.admin.rebuild": reply_handler(q.Health, self.rebuild),
            "billing.admin.rebuild_status": reply_handler(q.Health, self.rebuild.status),
            "billing.admin.retry_dead_letter": reply_handler(q.RetryDeadLetter, DeadLetterDesk(self.consumer).retry),
            "billing.admin.renew": reply_handler(q.Health, self.renew),
        }
        for subject, handler in handlers.items():
            await responder.serve(subject, QUEUE_GROUP, handler)
