"""Request bodies of the HTTP API, validated with the contract's own field types."""

from __future__ import annotations

import msgspec

from shared.contract.common import Cents, EmailText, Role


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RoleChange(Body, frozen=True, kw_only=True):
    role: Role


class NewInvitation(Body, frozen=True, kw_only=True):
    email: EmailText
    role: Role
    accept_charge_cents: Cents | None = None
