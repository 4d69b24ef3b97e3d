"""Settings → Roles: an enterprise organization's custom roles, listed, defined, edited and deleted by
whoever holds `org:manage`. The actions are /v1 calls made by static/roles.js."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get

from shared.contract.common import PERMISSIONS, RESERVED_PERMISSIONS, Identifier
from shared.contract.queries import OrganizationView, RolesPage, RoleView

from ..bus import PlatformBus
from ..callers import Access
from ..edge import InjectedEdge
from .rendering import identifier, navigation, render

# The Roles page lists no more than this many roles at once; it says so, and the API pages through the rest.
ROLES_SHOWN = 500
# Roles asked for per page of `membership.query.roles` (its largest page).
ROLES_PER_QUERY = 1000


def definable(access: Access) -> list[str]:
    """The permissions a role defined by this user may hold: their own, never the reserved two."""
    return [p for p in PERMISSIONS if p not in RESERVED_PERMISSIONS and access.allows(p)]


async def custom_roles(bus: PlatformBus, org_id: str) -> list[RoleView]:
    """Every custom role of the organization, paged through to the end (membership caps no count)."""
    roles: list[RoleView] = []
    cursor: str | None = None
    while True:
        page = msgspec.convert(
            await bus.query("membership", "roles", org_id=org_id, limit=ROLES_PER_QUERY, cursor=cursor), RolesPage, strict=False
        )
        roles.extend(page.roles)
        if page.next_cursor is None or not page.roles:
            return roles
        cursor = page.next_cursor


@get("/orgs/{org_id:str}/settings/roles", media_type=MediaType.HTML, include_in_schema=False)
async def roles_page(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier) -> Response[str]:
    org_id = identifier(org_id)
    caller, access = await edge.reader(request, org_id, "org:manage")
    organization = msgspec.convert(
        await edge.bus.query("membership", "get_organization", org_id=org_id), OrganizationView, strict=False
    )
    enterprise = organization.plan == "enterprise"
    roles = await custom_roles(edge.bus, org_id) if enterprise else []
    return render(
        request,
        "roles.html",
        user=caller.user,
        nav=navigation(org_id, access, "roles"),
        org=organization,
        enterprise=enterprise,
        roles=roles[:ROLES_SHOWN],
        roles_total=len(roles),
        checklist=definable(access),
    )


ROUTES = [roles_page]
