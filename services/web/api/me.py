"""`/v1/me`: who is calling. A key: its principal and its one organization. A signed-in user: their
organizations (paged, from `membership.query.user_orgs`) with the role and permissions in each."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, get

from shared.contract.queries import Principal

from ..callers import IDENTIFYING_PERMISSION, Caller
from ..edge import Edge
from .parameters import Limit, PageCursor
from .responses import problems
from .results import Me, OrgAccess, UserView

ME_PAGE = 100


@get("/v1/me", operation_id="me", responses=problems(401, 422, 503))
async def me(request: Request[Any, Any, Any], edge: Edge, limit: Limit = ME_PAGE, cursor: PageCursor = None) -> Me:
    caller = await edge.caller(request)
    principal = Principal(type=caller.actor.type, id=caller.actor.id)
    if caller.key_access is not None:
        key = caller.key_access
        org = OrgAccess(org_id=key.org_id, org_name=None, role=key.role, permissions=list(key.permissions))  # type: ignore[arg-type]
        return Me(principal=principal, user=None, orgs=[org], next_cursor=None)
    assert caller.user is not None
    page = await edge.bus.query("membership", "user_orgs", user_id=caller.user.user_id, limit=limit, cursor=cursor)
    orgs = await asyncio.gather(*(_access_in(edge, caller, org) for org in page["orgs"]))
    user = UserView(user_id=caller.user.user_id, email=caller.user.email)
    return Me(principal=principal, user=user, orgs=list(orgs), next_cursor=page["next_cursor"])


async def _access_in(edge: Edge, caller: Caller, org: dict[str, Any]) -> OrgAccess:
    access = await caller.access(edge.bus, org["org_id"], IDENTIFYING_PERMISSION)
    return OrgAccess(org_id=org["org_id"], org_name=org["org_name"], role=access.role, permissions=list(access.permissions))  # type: ignore[arg-type]


ROUTES = [me]
