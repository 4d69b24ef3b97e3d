"""`/v1/orgs/{org_id}`: the organization at a glance."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from shared.contract.common import Identifier
from shared.contract.queries import OrganizationView

from ..edge import Edge


@get("/v1/orgs/{org_id:str}", summary="get_organization")
async def get_organization(request: Request[Any, Any, Any], edge: Edge, org_id: Identifier) -> OrganizationView:
    await edge.reader(request, org_id, "members:read")
    result: OrganizationView = await edge.bus.query("membership", "get_organization", org_id=org_id)
    return result


ROUTES = [get_organization]
