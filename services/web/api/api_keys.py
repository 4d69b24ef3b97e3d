"""`/v1/orgs/{org_id}/api-keys`: list, create (the secret is in that one response), revoke."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post
from litestar.params import JSONBody

from shared.contract.queries import ApiKeysPage

from ..edge import InjectedEdge
from .bodies import NewApiKey
from .parameters import KeyId, Limit, OrgId, PageCursor
from .responses import COMMAND, READ, problems
from .results import ApiKeyCreated, ApiKeyRevoked

# The one response holding a key's secret is kept by no cache on the way.
NOT_STORED = {"Cache-Control": "no-store"}


@get("/v1/orgs/{org_id:str}/api-keys", operation_id="api_keys", responses=READ)
async def list_api_keys(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, limit: Limit = 100, cursor: PageCursor = None
) -> ApiKeysPage:
    """The organization's keys, oldest first, paged, never a secret (api_keys:read)."""
    await edge.reader(request, org_id, "api_keys:read")
    result: ApiKeysPage = await edge.bus.query("membership", "api_keys", org_id=org_id, limit=limit, cursor=cursor)
    return result


@post("/v1/orgs/{org_id:str}/api-keys", operation_id="create_api_key", status_code=201, responses=problems(*COMMAND))
async def create_api_key(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, data: JSONBody[NewApiKey]
) -> Response[ApiKeyCreated]:
    """A new key with permissions within the caller's; its `secret` is shown here once and never again."""
    caller = await edge.caller(request)
    result = await edge.command(
        request,
        "create_api_key",
        org_id,
        caller.actor,
        name=data.name,
        permissions=data.permissions,
        owner_user_id=data.owner_user_id,
        expires_at=data.expires_at,
        projects=data.projects,
    )
    return Response(result, status_code=201, headers=NOT_STORED)


@delete(
    "/v1/orgs/{org_id:str}/api-keys/{key_id:str}", operation_id="revoke_api_key", status_code=200, responses=problems(*COMMAND)
)
async def revoke_api_key(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, key_id: KeyId) -> ApiKeyRevoked:
    caller = await edge.caller(request)
    result: ApiKeyRevoked = await edge.command(request, "revoke_api_key", org_id, caller.actor, key_id=key_id)
    return result


ROUTES = [list_api_keys, create_api_key, revoke_api_key]
