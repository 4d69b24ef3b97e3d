"""Settings → API keys, Billing and Audit log: each opens only for whoever holds its read permission
(navigation hides the others; opening one anyway gets the 403 page)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.params import FromQuery

from shared.contract.common import PERMISSIONS, Identifier
from shared.contract.queries import ApiKeysPage, AuditSearch, PageCursor

from ..edge import InjectedEdge
from .rendering import identifier, navigation, render

AUDIT_PAGE_SIZE = 50


@get("/orgs/{org_id:str}/settings/api-keys", media_type=MediaType.HTML, include_in_schema=False)
async def api_keys_page(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier, cursor: FromQuery[PageCursor | None] = None
) -> Response[str]:
    org_id = identifier(org_id)
    caller, access = await edge.reader(request, org_id, "api_keys:read")
    page = msgspec.convert(
        await edge.bus.query("membership", "api_keys", org_id=org_id, limit=100, cursor=cursor), ApiKeysPage, strict=False
    )
    can_manage = access.allows("api_keys:manage")
    return render(
        request,
        "api_keys.html",
        user=caller.user,
        nav=navigation(org_id, access, "api-keys"),
        org_id=org_id,
        keys=page.api_keys,
        next_cursor=page.next_cursor,
        # A key can hold no permission its creator lacks: the checklist offers only the user's own.
        my_projects=access.projects,
        grantable=[permission for permission in PERMISSIONS if access.allows(permission)],
        can_create_owned=access.allows("api_keys:own") or can_manage,
        can_create_api_only=can_manage,
        can_manage=can_manage,
        me=caller.actor.id,
    )


@get("/orgs/{org_id:str}/settings/billing", media_type=MediaType.HTML, include_in_schema=False)
async def billing_page(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier, cursor: FromQuery[PageCursor | None] = None
) -> Response[str]:
    org_id = identifier(org_id)
    caller, access = await edge.reader(request, org_id, "billing:read")
    charges = await edge.bus.query("billing", "charges", org_id=org_id, limit=50, cursor=cursor)
    upcoming = await edge.bus.query("billing", "upcoming_invoice", org_id=org_id)
    return render(
        request,
        "billing.html",
        user=caller.user,
        nav=navigation(org_id, access, "billing"),
        org_id=org_id,
        charges=charges["charges"],
        next_cursor=charges["next_cursor"],
        upcoming=upcoming,
    )


AUDIT_FILTERS = ("action", "actor_id", "target_id", "from", "to")


@get("/orgs/{org_id:str}/settings/audit", media_type=MediaType.HTML, include_in_schema=False)
async def audit_page(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier) -> Response[str]:
    org_id = identifier(org_id)
    caller, access = await edge.reader(request, org_id, "audit:read")
    filters = {name: value for name in AUDIT_FILTERS if (value := request.query_params.get(name, "").strip())}
    cursor = request.query_params.get("cursor") or None
    problem: str | None = None
    result: dict[str, Any] = {"entries": [], "next_cursor": None}
    try:
        search = msgspec.convert(
            {"org_id": org_id, **filters, "cursor": cursor, "limit": AUDIT_PAGE_SIZE}, AuditSearch, strict=False
        )
    except msgspec.ValidationError as invalid:
        problem = f"The filters are not valid: {invalid}"
    else:
        result = await edge.bus.query("audit", "search", **msgspec.to_builtins(search))
    verdict = await edge.bus.query("audit", "verify", org_id=org_id)
    return render(
        request,
        "audit.html",
        user=caller.user,
        nav=navigation(org_id, access, "audit"),
        org_id=org_id,
        filters=filters,
        problem=problem,
        entries=result["entries"],
        next_cursor=result["next_cursor"],
        verdict=verdict,
        page_size=AUDIT_PAGE_SIZE,
    )


ROUTES = [api_keys_page, billing_page, audit_page]
