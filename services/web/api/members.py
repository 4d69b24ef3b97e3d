"""`/v1/orgs/{org_id}/members`: list, change a role, remove."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete, get, patch
from litestar.params import JSONBody

from shared.contract.queries import MembersPage

from ..edge import InjectedEdge
from .bodies import RoleChange
from .parameters import Limit, OrgId, PageCursor, UserId
from .responses import COMMAND, READ, problems
from .results import MemberRemoved, MemberRole


@get("/v1/orgs/{org_id:str}/members", operation_id="members", responses=READ)
async def list_members(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, limit: Limit = 100, cursor: PageCursor = None
) -> MembersPage:
    """The members, oldest first, paged (members:read)."""
    await edge.reader(request, org_id, "members:read")
    result: MembersPage = await edge.bus.query("membership", "members", org_id=org_id, limit=limit, cursor=cursor)
    return result


@patch(
    "/v1/orgs/{org_id:str}/members/{user_id:str}", operation_id="change_role", responses=problems(*COMMAND, 402)
)  # 402: a custom role needs the enterprise plan
async def change_role(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, user_id: UserId, data: JSONBody[RoleChange]
) -> MemberRole:
    caller = await edge.caller(request)
    scope = {"projects": data.projects} if data.projects is not msgspec.UNSET else {}
    result: MemberRole = await edge.command(
        request,
        "change_role",
        org_id,
        caller.actor,
        user_id=user_id,
        role=data.role,
        every_project=data.every_project or None,
        **scope,
    )
    return result


@delete(
    "/v1/orgs/{org_id:str}/members/{user_id:str}", operation_id="remove_member", status_code=200, responses=problems(*COMMAND)
)
async def remove_member(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, user_id: UserId) -> MemberRemoved:
    """Remove a member; the keys they own or created are revoked with them."""
    caller = await edge.caller(request)
    result: MemberRemoved = await edge.command(request, "remove_member", org_id, caller.actor, user_id=user_id)
    return result


ROUTES = [list_members, change_role, remove_member]
