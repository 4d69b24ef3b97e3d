"""`/v1`: one module per resource; each lists its route handlers in ROUTES."""

from __future__ import annotations

from typing import Any

from . import api_keys, audit, billing, invitations, me, members, organizations, roles, seats

ROUTES: list[Any] = [
    *organizations.ROUTES,
    *members.ROUTES,
    *invitations.ROUTES,
    *seats.ROUTES,
    *api_keys.ROUTES,
    *roles.ROUTES,
    *billing.ROUTES,
    *audit.ROUTES,
    *me.ROUTES,
]
