"""`/`: where sign-in without `next` and sign-out land. Signed in: the user's organizations, each
linking to its Team page. Not signed in: how to sign in."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get

from ..edge import InjectedEdge
from .rendering import render

# As many organizations as /v1/me's first page: more than anyone belongs to in practice.
ORGS_SHOWN = 100


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def home(request: Request[Any, Any, Any], edge: InjectedEdge) -> Response[str]:
    user = await edge.sessions.signed_in(request)
    if user is None:
        return render(request, "home.html", orgs=[], sign_in_next="/")
    page = await edge.bus.query("membership", "user_orgs", user_id=user.user_id, limit=ORGS_SHOWN)
    more = page["next_cursor"] is not None
    return render(request, "home.html", user=user, orgs=page["orgs"], more=more, shown=ORGS_SHOWN, sign_in_next=None)


ROUTES = [home]
