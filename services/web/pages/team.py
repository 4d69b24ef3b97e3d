"""Settings → Team: the members, the pending invitations, the seat meter, and the actions the
signed-in user's permissions allow. The actions themselves are /v1 calls made by static/app.js."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get

from shared.contract.common import BUILTIN_ROLE_PERMISSIONS, ROLES, Identifier
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
    """What the page offers, from what `authorize` said; membership checks every command again.

    A role, built-in or custom, is offered only to whoever holds everything it grants, and a member's
    Change role / Remove only to whoever holds everything their role grants (contract v1.3.1)."""

    invite: bool
    manage_members: bool
    manage_owners: bool
    buy_seats: bool
    held: frozenset[str] = frozenset()
    # Every role this page knows of, built-in and the org's custom ones, with what it grants.
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)  # custom roles' names, by key

    @classmethod
    def of(cls, access: Access, roles: list[RoleView] | None = None) -> TeamActions:
        grants: dict[str, frozenset[str]] = {role: frozenset(BUILTIN_ROLE_PERMISSIONS[role]) for role in ROLES}
        grants.update((role.role_key, frozenset(role.permissions)) for role in roles or ())
        return cls(
            invite=access.allows("members:invite"),
            manage_members=access.allows("members:manage"),
            manage_owners=access.allows("owners:manage"),
            buy_seats=access.allows("billing:manage"),
            held=frozenset(access.permissions),
            grants=grants,
            names={role.role_key: role.name for role in roles or ()},
        )

    def holds_all_of(self, role: str) -> bool:
        """Whether the user holds every permission `role` grants; an unknown role: no."""
        granted = self.grants.get(role)
        return granted is not None and granted <= self.held

    def roles_assignable(self) -> tuple[RoleChoice, ...]:
        return tuple(
            RoleChoice(role, self.names.get(role) or role.capitalize()) for role in self.grants if self.holds_all_of(role)
        )

    def offers(self, role: str) -> bool:
        return any(choice.value == role for choice in self.roles_assignable())

    def may_manage(self, member: MemberView, me: str) -> bool:
        # Leaving by choice is not offered here: one's own row never shows Change role or Remove.
        if not self.manage_members or member.user_id == me:
            return False
        return self.holds_all_of(member.role)


# Pending invitations shown at once; a "more" link pages on through the rest.
PENDING_SHOWN = 100


@get("/orgs/{org_id:str}/settings/team", media_type=MediaType.HTML, include_in_schema=False)
async def team_page(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: Identifier, invitations_after: PageCursor = None
) -> Response[str]:
    org_id = identifier(org_id)
    caller, access = await edge.reader(request, org_id, "members:read")
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
        my_projects=access.projects,
        role_names={role.role_key: role.name for role in roles},
    )


ROUTES = [team_page]
