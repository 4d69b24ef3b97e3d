"""`/v1/orgs/{org_id}/roles`: an enterprise organization's custom roles: list, define, update, delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, patch, post
from litestar.params import JSONBody, Parameter

from shared.contract.commands import RolePermissions
from shared.contract.common import ROLE_KEY_PATTERN, Description, NonEmptyText, Permission, RoleKey
from shared.contract.queries import RolesPage

from ..edge import InjectedEdge
from .bodies import Body
from .parameters import Limit, OrgId, PageCursor
from .responses import COMMAND, READ, problems
from .results import Result

# A custom role's key in a path: the contract's slug (the built-in names match it, and membership refuses them).
RoleKeyParameter = Annotated[
    str, Parameter(pattern=ROLE_KEY_PATTERN, min_length=1, max_length=63, description="a custom role's key, a slug")
]


class NewRole(Body, frozen=True, kw_only=True):
    role_key: RoleKey
    name: NonEmptyText
    description: Description = ""
    permissions: RolePermissions  # never owners:manage nor org:manage, none the definer lacks


class RoleEdit(Body, frozen=True, kw_only=True):
    """What is absent stays as it was."""

    name: NonEmptyText | None = None
    description: Description | None = None
    permissions: RolePermissions | None = None


class RoleChanged(Result, frozen=True, kw_only=True):
    """`define_role`'s and `update_role`'s result: the role's permissions now."""

    role_key: str
    permissions: list[Permission]


class RoleDeleted(Result, frozen=True, kw_only=True):
    role_key: str


# 402: defining and updating custom roles need the enterprise plan; 409: a key already defined, or a
# role still held (`details` lists them). Deleting works on any plan, so a downgrade's leftovers can go.
ROLE_COMMAND = problems(*COMMAND, 402)
ROLE_DELETION = problems(*COMMAND)


@get("/v1/orgs/{org_id:str}/roles", operation_id="roles", responses=READ)
async def list_roles(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, limit: Limit = 100, cursor: PageCursor = None
) -> RolesPage:
    """The organization's custom roles, by key, paged (members:read)."""
    await edge.reader(request, org_id, "members:read")
    result: RolesPage = await edge.bus.query("membership", "roles", org_id=org_id, limit=limit, cursor=cursor)
    return result


@post("/v1/orgs/{org_id:str}/roles", operation_id="define_role", status_code=201, responses=ROLE_COMMAND)
async def define_role(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, data: JSONBody[NewRole]) -> RoleChanged:
    """Define a custom role (org:manage, enterprise plan); it holds only permissions the caller holds."""
    caller = await edge.caller(request)
    result: RoleChanged = await edge.command(
        request,
        "define_role",
        org_id,
        caller.actor,
        role_key=data.role_key,
        name=data.name,
        description=data.description,
        permissions=data.permissions,
    )
    return result


@patch("/v1/orgs/{org_id:str}/roles/{role_key:str}", operation_id="update_role", responses=ROLE_COMMAND)
async def update_role(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, role_key: RoleKeyParameter, data: JSONBody[RoleEdit]
) -> RoleChanged:
    """Change a custom role; its holders and their keys have the new permissions from the next `authorize`."""
    caller = await edge.caller(request)
    result: RoleChanged = await edge.command(
        request,
        "update_role",
        org_id,
        caller.actor,
        role_key=role_key,
        name=data.name,
        description=data.description,
        permissions=data.permissions,
    )
    return result


@delete("/v1/orgs/{org_id:str}/roles/{role_key:str}", operation_id="delete_role", status_code=200, responses=ROLE_DELETION)
async def delete_role(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, role_key: RoleKeyParameter
) -> RoleDeleted:
    """Delete a custom role; while a member or a pending invitation holds it, 409 lists them in `details`."""
    caller = await edge.caller(request)
    result: RoleDeleted = await edge.command(request, "delete_role", org_id, caller.actor, role_key=role_key)
    return result


ROUTES = [list_roles, define_role, update_role, delete_role]
