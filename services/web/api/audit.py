"""`/v1/orgs/{org_id}/audit`: search, verify the chain, and export it streamed (audit:read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import Request, get
from litestar.response import Stream

from ..bus import PlatformBus
from ..edge import Edge
from .parameters import Action, ActorId, Cursor, ExportFormat, From, Limit, OrgId, TargetId, To, instant
from .responses import READ
from .results import AuditEntriesPage, AuditVerdict

log = structlog.get_logger()

# Litestar adds `; charset=utf-8` to a text/ type itself.
EXPORT_MEDIA_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


@get("/v1/orgs/{org_id:str}/audit/entries", operation_id="search", responses=READ)
async def search(
    request: Request[Any, Any, Any],
    edge: Edge,
    org_id: OrgId,
    from_: From = None,
    to: To = None,
    action: Action = None,
    actor_id: ActorId = None,
    target_id: TargetId = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> AuditEntriesPage:
    """Entries oldest first, `from` inclusive and `to` exclusive, paged."""
    await edge.reader(request, org_id, "audit:read")
    result: AuditEntriesPage = await edge.bus.query(
        "audit",
        "search",
        org_id=org_id,
        to=instant(to, "to"),
        action=action,
        actor_id=actor_id,
        target_id=target_id,
        cursor=cursor,
        limit=limit,
        **{"from": instant(from_, "from")},
    )
    return result


@get("/v1/orgs/{org_id:str}/audit/verify", operation_id="verify", responses=READ)
async def verify(request: Request[Any, Any, Any], edge: Edge, org_id: OrgId) -> AuditVerdict:
    """Walk the hash chain; `ok` is false at the first bad entry or when events are missing from it."""
    await edge.reader(request, org_id, "audit:read")
    result: AuditVerdict = await edge.bus.query("audit", "verify", org_id=org_id)
    return result


@get("/v1/orgs/{org_id:str}/audit/export", operation_id="export", responses=READ)
async def export(
    request: Request[Any, Any, Any], edge: Edge, org_id: OrgId, format: ExportFormat = "csv", from_: From = None, to: To = None
) -> Stream:
    """The whole log (or a time window) as CSV or NDJSON, streamed page by page as audit gives it out."""
    await edge.reader(request, org_id, "audit:read")
    query = {"org_id": org_id, "format": format, "from": instant(from_, "from"), "to": instant(to, "to")}
    # The first page is asked for before the response starts, so a refusal is still a problem+json.
    first = await edge.bus.query("audit", "export", **query)
    return Stream(
        _pages(edge.bus, query, first),
        media_type=EXPORT_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="audit-{org_id}.{format}"', "Cache-Control": "no-store"},
    )


async def _pages(bus: PlatformBus, query: dict[str, Any], page: dict[str, Any]) -> AsyncIterator[bytes]:
    while True:
        yield page["data"].encode()
        if page["next_cursor"] is None:
            return
        try:
            page = await bus.query("audit", "export", **query, cursor=page["next_cursor"])
        except Exception as failure:
            # The status is already sent: breaking the connection is how the client learns the file is cut short.
            log.warning("audit export cut short", org_id=query["org_id"], failure=type(failure).__name__)
            raise


ROUTES = [search, verify, export]
