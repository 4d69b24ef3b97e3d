"""`/v1/orgs/{org_id}/members`: list, change a role, remove."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, patch

from shared.contract.common import Identifier
from shared.contract.queries import Limit, MembersPage, PageCursor

from ..edge import Edge
from .bodies import RoleChange


@get("/v1/orgs/{org_id:str}/members", summary="members")
async def list_members(
    request: Request[Any, Any, Any], edge: Edge, org_id: Identifier, limit: Limit = 100, cursor: PageCursor | None = None
) -> MembersPage:
    await edge.reader(request, org_id, "members:read")
    result: MembersPage = await edge.bus.query("membership", "members", org_id=org_id, limit=limit, cursor=cursor)
    return result


@patch("/v1/orgs/{org_id:str}/members/{user_id:str}", summary="change_role")
async def change_role(
    request: Request[Any, Any, Any], edge: Edge, org_id: Identifier, user_id: Identifier, data: RoleChange
) -> Any:
    caller = await edge.caller(request)
    return await edge.command(request, "change_role", org_id, caller.actor, user_id=user_id, role=data.role)


@delete("/v1/orgs/{org_id:str}/members/{user_id:str}", summary="remove_member", status_code=200)
async def remove_member(request: Request[Any, Any, Any], edge: Edge, org_id: Identifier, user_id: Identifier) -> Any:
    caller = await edge.caller(request)
    return await edge.command(request, "remove_member", org_id, caller.actor, user_id=user_id)


ROUTES = [list_members, change_role, remove_member]
