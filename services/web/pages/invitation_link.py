"""The page an invitation email links to: who invites you where, as what, until when; and Accept.

The token in the link is the credential: the page asks membership about the invitation with it,
and a token that does not match reveals nothing (one "this link is not valid" page for both a wrong
token and an unknown invitation)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import MediaType, Request, Response, get

from shared.contract.common import Identifier
from shared.contract.queries import InvitationLinkView
from shared.errors import InvalidToken, NotFound

from ..edge import Edge
from .rendering import identifier, render

TOKEN = re.compile(r"[A-Za-z0-9_.~-]{1,512}")

# Each state a link can be in, with the HTTP status its page answers.
STATUS_OF_STATE = {"pending": 200, "accepted": 409, "revoked": 410, "expired": 410, "invalid": 404}


@get("/invitations/{invitation_id:str}/accept", media_type=MediaType.HTML, include_in_schema=False)
async def invitation_page(
    request: Request[Any, Any, Any], edge: Edge, invitation_id: Identifier, token: str | None = None
) -> Response[str]:
    invitation_id = identifier(invitation_id)
    user = await edge.sessions.signed_in(request)
    invitation: InvitationLinkView | None = None
    if token is not None and TOKEN.fullmatch(token):
        try:
            answer = await edge.bus.query("membership", "invitation", invitation_id=invitation_id, token=token)
            invitation = msgspec.convert(answer, InvitationLinkView, strict=False)
        except (InvalidToken, NotFound):
            invitation = None
    state = "invalid" if invitation is None else invitation.status
    here = f"/invitations/{quote(invitation_id, safe='')}/accept?token={quote(token or '', safe='')}"
    email_mismatch = (
        user is not None and invitation is not None and user.email.strip().lower() != invitation.email.strip().lower()
    )
    return render(
        request,
        "invitation.html",
        status_code=STATUS_OF_STATE[state],
        user=user,
        state=state,
        invitation=invitation,
        invitation_id=invitation_id,
        token=token or "",
        here=here,
        email_mismatch=email_mismatch,
    )


ROUTES = [invitation_page]
