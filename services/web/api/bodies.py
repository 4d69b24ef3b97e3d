"""Request bodies of the HTTP API, validated with the contract's own field types."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.contract.commands import Token
from shared.contract.common import Cents, EmailText, Identifier, NonEmptyText, Permission, Plan, Quantity, Role, UtcTime


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RoleChange(Body, frozen=True, kw_only=True):
    role: Role


class NewInvitation(Body, frozen=True, kw_only=True):
    email: EmailText
    role: Role
    accept_charge_cents: Cents | None = None


class Acceptance(Body, frozen=True, kw_only=True):
    token: Token


class SeatPurchase(Body, frozen=True, kw_only=True):
    quantity: Quantity
    accept_charge_cents: Cents


class SeatRelease(Body, frozen=True, kw_only=True):
    quantity: Quantity


class NewApiKey(Body, frozen=True, kw_only=True):
    name: NonEmptyText
    permissions: Annotated[list[Permission], msgspec.Meta(min_length=1, max_length=64)]
    owner_user_id: Identifier | None = None
    expires_at: UtcTime | None = None


class PlanChange(Body, frozen=True, kw_only=True):
    plan: Plan
