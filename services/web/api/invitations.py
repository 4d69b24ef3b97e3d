"""`/v1/orgs/{org_id}/invitations`: list and invite; resend, revoke and accept."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from shared.contract.common import Identifier
from shared.contract.queries import InvitationsPage, Limit, PageCursor

from ..edge import Edge
from .bodies import NewInvitation


@get("/v1/orgs/{org_id:str}/invitations", summary="invitations")
async def list_invitations(
    request: Request[Any, Any, Any], edge: Edge, org_id: Identifier, limit: Limit = 100, cursor: PageCursor | None = None
) -> InvitationsPage:
    await edge.reader(request, org_id, "members:read")
    result: InvitationsPage = await edge.bus.query("membership", "invitations", org_id=org_id, limit=limit, cursor=cursor)
    return result


@post("/v1/orgs/{org_id:str}/invitations", summary="invite_member", status_code=201)
async def invite_member(request: Request[Any, Any, Any], edge: Edge, org_id: Identifier, data: NewInvitation) -> Any:
    caller = await edge.caller(request)
    return await edge.command(
        request,
        "invite_member",
        org_id,
        caller.actor,
        email=data.email,
        role=data.role,
        accept_charge_cents=data.accept_charge_cents,
    )


ROUTES = [list_invitations, invite_member]
