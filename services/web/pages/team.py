"""Settings → Team: the members, the pending invitations, the seat meter, and the actions the
signed-in user's permissions allow. The actions themselves are /v1 calls made by static/app.js."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get

from shared.contract.common import ROLES, Identifier, Role
from shared.contract.queries import MemberView, OrganizationView

from ..callers import Access
from ..edge import Edge
from .rendering import identifier, navigation, render


@dataclass(frozen=True)
class TeamActions:
    """What the page offers, from what `authorize` said; membership checks every command again."""

    invite: bool
    manage_members: bool
    manage_owners: bool
    buy_seats: bool

    @classmethod
    def of(cls, access: Access) -> TeamActions:
        return cls(
            invite=access.allows("members:invite"),
            manage_members=access.allows("members:manage"),
            manage_owners=access.allows("owners:manage"),
            buy_seats=access.allows("billing:manage"),
        )

    def roles_assignable(self) -> tuple[Role, ...]:
        return ROLES if self.manage_owners else tuple(role for role in ROLES if role != "owner")

    def may_manage(self, member: MemberView, me: str) -> bool:
        if not self.manage_members or member.user_id == me:
            return False
        return member.role != "owner" or self.manage_owners


@get("/orgs/{org_id:str}/settings/team", media_type=MediaType.HTML, include_in_schema=False)
async def team_page(request: Request[Any, Any, Any], edge: Edge, org_id: Identifier) -> Response[str]:
    org_id = identifier(org_id)
    caller = await edge.caller(request)
    access = await caller.require(edge.bus, org_id, "members:read")
    organization = msgspec.convert(
        await edge.bus.query("membership", "get_organization", org_id=org_id), OrganizationView, strict=False
    )
    actions = TeamActions.of(access)
    return render(
        request,
        "team.html",
        user=caller.user,
        nav=navigation(org_id, access, "team"),
        org=organization,
        seats=organization.seats,
        pending=[invitation for invitation in organization.invitations if invitation.status == "pending"],
        actions=actions,
        me=caller.actor.id,
        access=access,
    )


ROUTES = [team_page]
