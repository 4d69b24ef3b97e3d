"""`/v1/orgs/{org_id}/billing`: the charges (paged) and the next bill (billing:read)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from ..edge import Edge
from .parameters import Cursor, Limit, OrgId
from .responses import READ
from .results import ChargesPage, UpcomingInvoice


@get("/v1/orgs/{org_id:str}/billing/charges", operation_id="charges", responses=READ)
async def charges(
    request: Request[Any, Any, Any], edge: Edge, org_id: OrgId, limit: Limit = 100, cursor: Cursor = None
) -> ChargesPage:
    """Every charge and credit, oldest first, paged."""
    await edge.reader(request, org_id, "billing:read")
    result: ChargesPage = await edge.bus.query("billing", "charges", org_id=org_id, limit=limit, cursor=cursor)
    return result


@get("/v1/orgs/{org_id:str}/billing/upcoming-invoice", operation_id="upcoming_invoice", responses=READ)
async def upcoming_invoice(request: Request[Any, Any, Any], edge: Edge, org_id: OrgId) -> UpcomingInvoice:
    """What will be billed at the end of the current period."""
    await edge.reader(request, org_id, "billing:read")
    result: UpcomingInvoice = await edge.bus.query("billing", "upcoming_invoice", org_id=org_id)
    return result


ROUTES = [charges, upcoming_invoice]
