"""`/v1/orgs/{org_id}/invitations`: list, invite, resend, revoke; `/v1/invitations/{id}/accept`."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.params import JSONBody

from shared.contract.common import Actor
from shared.contract.queries import InvitationsPage
from shared.errors import InvalidToken, NotFound, PermissionDenied

from ..edge import InjectedEdge
from .bodies import Acceptance, NewInvitation
from .parameters import InvitationId, InvitationStatus, Limit, OrgId, PageCursor
from .responses import COMMAND, READ, problems
from .results import InvitationResent, InvitationRevoked, InvitationSent, MemberRole

# Membership's words for a token that does not match its invitation, used for an unknown one too.
UNUSABLE_LINK = "the invitation token does not match"


@get("/v1/orgs/{org_id:str}/invitations", operation_id="invitations", responses=READ)
async def list_invitations(
    request: Request[Any, Any, Any],
    edge: InjectedEdge,
    org_id: OrgId,
    limit: Limit = 100,
    cursor: PageCursor = None,
    status: InvitationStatus = None,
) -> InvitationsPage:
    """The organization's invitations, oldest first, paged, of one `status` if given (members:read)."""
    await edge.reader(request, org_id, "members:read")
    result: InvitationsPage = await edge.bus.query(
        "membership", "invitations", org_id=org_id, limit=limit, cursor=cursor, status=status
    )
    return result


@post("/v1/orgs/{org_id:str}/invitations", operation_id="invite_member", status_code=201, responses=problems(*COMMAND, 402))
async def invite_member(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, data: JSONBody[NewInvitation]
) -> InvitationSent:
    """Invite someone by email; when a seat must be bought, `accept_charge_cents` confirms the quoted amount."""
    caller = await edge.caller(request)
    result: InvitationSent = await edge.command(
        request,
        "invite_member",
        org_id,
        caller.actor,
        email=data.email,
        role=data.role,
        accept_charge_cents=data.accept_charge_cents,
        projects=data.projects,
    )
    return result


@post(
    "/v1/orgs/{org_id:str}/invitations/{invitation_id:str}/resend",
    operation_id="resend_invitation",
    status_code=200,
    responses=problems(*COMMAND, 402, 410),
)
async def resend_invitation(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, invitation_id: InvitationId
) -> InvitationResent:
    """Send the invitation again with a new expiry; older links stop working."""
    caller = await edge.caller(request)
    result: InvitationResent = await edge.command(request, "resend_invitation", org_id, caller.actor, invitation_id=invitation_id)
    return result


@delete(
    "/v1/orgs/{org_id:str}/invitations/{invitation_id:str}",
    operation_id="revoke_invitation",
    status_code=200,
    responses=problems(*COMMAND),
)
async def revoke_invitation(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, invitation_id: InvitationId
) -> InvitationRevoked:
    caller = await edge.caller(request)
    result: InvitationRevoked = await edge.command(
        request, "revoke_invitation", org_id, caller.actor, invitation_id=invitation_id
    )
    return result


@post(
    "/v1/invitations/{invitation_id:str}/accept",
    operation_id="accept_invitation",
    status_code=200,
    responses=problems(*COMMAND, 402, 410),
)
async def accept_invitation(
    request: Request[Any, Any, Any], edge: InjectedEdge, invitation_id: InvitationId, data: JSONBody[Acceptance]
) -> MemberRole:
    """Join the organization as the signed-in user, whose email must be the invitation's. An API key cannot accept."""
    caller = await edge.caller(request)
    if caller.user is None:
        raise PermissionDenied("an invitation is accepted by a signed-in person, not an API key", reason="not_a_user")
    # The org comes from the invitation behind the token. A wrong token and an unknown invitation are
    # the same invalid_token, so the route tells no one which invitation ids exist.
    try:
        link = await edge.bus.query("membership", "invitation", invitation_id=invitation_id, token=data.token)
    except NotFound:
        raise InvalidToken(UNUSABLE_LINK) from None
    result: MemberRole = await edge.command(
        request,
        "accept_invitation",
        link["org_id"],
        Actor(type="user", id=caller.user.user_id),
        invitation_id=invitation_id,
        token=data.token,
        user_id=caller.user.user_id,
        email=caller.user.email,
    )
    return result


ROUTES = [list_invitations, invite_member, resend_invitation, revoke_invitation, accept_invitation]
