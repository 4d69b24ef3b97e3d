"""Settings → Team: the members, the pending invitations, the seat meter, and the actions the
signed-in user's permissions allow. The actions themselves are /v1 calls made by static/app.js."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get

from shared.contract.common import ROLES, Identifier
from shared.contract.queries import InvitationsPage, MemberView, OrganizationView, RoleView

from ..api.parameters import PageCursor
from ..callers import Access
from ..edge import InjectedEdge
from .rendering import identifier, navigation, render
from .roles import custom_roles


@dataclass(frozen=True)
class RoleChoice:
    """A role the picker offers: a built-in one, or a custom role's key with its name."""

    value: str
    label: str


@dataclass(frozen=True)
class TeamActions:
    """What the page offers, from what `authorize` said; membership checks every command again."""

    invite: bool
    manage_members: bool
    manage_owners: bool
    buy_seats: bool
    custom: tuple[RoleChoice, ...] = ()  # the org's custom roles this user holds every permission of

    @classmethod
    def of(cls, access: Access, roles: list[RoleView] | None = None) -> TeamActions:
        # A custom role is assigned only by whoever holds all it grants: the picker offers no other.
        custom = tuple(
            RoleChoice(role.role_key, role.name) for role in roles or () if all(access.allows(p) for p in role.permissions)
        )
        return cls(
            invite=access.allows("members:invite"),
            manage_members=access.allows("members:manage"),
            manage_owners=access.allows("owners:manage"),
            buy_seats=access.allows("billing:manage"),
            custom=custom,
        )

    def roles_assignable(self) -> tuple[RoleChoice, ...]:
        builtin = ROLES if self.manage_owners else tuple(role for role in ROLES if role != "owner")
        return (*(RoleChoice(role, role.capitalize()) for role in builtin), *self.custom)

    def offers(self, role: str) -> bool:
        return any(choice.value == role for choice in self.roles_assignable())

    def may_manage(self, member: MemberView, me: str) -> bool:
        if not self.manage_members or member.user_id == me:
            return False
        return member.role != "owner" or self.manage_owners


# Pending invitations shown at once; a "more" link pages on through the rest.
PENDING_SHOWN = 100


@get("/orgs/{org_id:str}/settings/team", media_type=MediaType.HTML, include_in_schema=False)
async def team_page(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier, invitations_after: PageCursor = None
) -> Response[str]:
    org_id = identifier(org_id)
    caller = await edge.caller(request)
    access = await caller.require(edge.bus, org_id, "members:read")
    organization = msgspec.convert(
        await edge.bus.query("membership", "get_organization", org_id=org_id), OrganizationView, strict=False
    )
    # Not the organization's embedded invitations: those are the oldest 100 of every status, so an org
    # that has sent 100 would stop seeing its new ones.
    pending = msgspec.convert(
        await edge.bus.query(
            "membership", "invitations", org_id=org_id, status="pending", limit=PENDING_SHOWN, cursor=invitations_after
        ),
        InvitationsPage,
        strict=False,
    )
    offers_roles = access.allows("members:invite") or access.allows("members:manage")
    roles = await custom_roles(edge.bus, org_id) if organization.plan == "enterprise" else []
    actions = TeamActions.of(access, roles if offers_roles else None)
    return render(
        request,
        "team.html",
        user=caller.user,
        nav=navigation(org_id, access, "team"),
        org=organization,
        seats=organization.seats,
        pending=pending.invitations,
        pending_next=pending.next_cursor,
        pending_continued=invitations_after is not None,
        actions=actions,
        me=caller.actor.id,
        access=access,
        role_names={role.role_key: role.name for role in roles},
    )


ROUTES = [team_page]
