"""`/v1/orgs/{org_id}`: the organization at a glance; `PUT /plan` changes its plan."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, put

from shared.contract.queries import OrganizationView

from ..edge import Edge
from .bodies import PlanChange
from .parameters import OrgId
from .responses import COMMAND, READ, problems
from .results import PlanChanged


@get("/v1/orgs/{org_id:str}", operation_id="get_organization", responses=READ)
async def get_organization(request: Request[Any, Any, Any], edge: Edge, org_id: OrgId) -> OrganizationView:
    """The organization with its first 100 members and invitations, and its seats (members:read)."""
    await edge.reader(request, org_id, "members:read")
    result: OrganizationView = await edge.bus.query("membership", "get_organization", org_id=org_id)
    return result


@put("/v1/orgs/{org_id:str}/plan", operation_id="change_plan", responses=problems(*COMMAND, 402))
async def change_plan(request: Request[Any, Any, Any], edge: Edge, org_id: OrgId, data: PlanChange) -> PlanChanged:
    caller = await edge.caller(request)
    result: PlanChanged = await edge.command(request, "change_plan", org_id, caller.actor, plan=data.plan)
    return result


ROUTES = [get_organization, change_plan]
