"""`/v1`: one module per resource; each lists its route handlers in ROUTES."""

from __future__ import annotations

from typing import Any

from . import invitations, members, organizations

ROUTES: list[Any] = [*organizations.ROUTES, *members.ROUTES, *invitations.ROUTES]
