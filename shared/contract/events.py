"""Events published on the `MEMBERSHIP` stream: an envelope around one of these data bodies.

Consumers decode leniently: unknown fields are ignored so that producers may add fields.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .common import Actor, Permission, Plan, Role, UtcTime

SCHEMA_VERSION = 1


class EventData(msgspec.Struct, frozen=True, kw_only=True):
    pass


class OrganizationCreated(EventData, frozen=True, kw_only=True):
    name: str
    plan: Plan
    owner_user_id: str
    owner_email: str
    seats_included: int
    unit_price_cents: int
    billing_anchor: UtcTime


class PlanChanged(EventData, frozen=True, kw_only=True):
    from_plan: Plan
    to_plan: Plan
    seats_included: int
    billing_anchor: UtcTime


class MemberInvited(EventData, frozen=True, kw_only=True):
    invitation_id: str
    email: str
    role: Role
    invited_by: Actor
    expires_at: UtcTime


class InvitationResent(EventData, frozen=True, kw_only=True):
    invitation_id: str
    email: str
    expires_at: UtcTime


class InvitationRevoked(EventData, frozen=True, kw_only=True):
    invitation_id: str
    email: str


class InvitationAccepted(EventData, frozen=True, kw_only=True):
    invitation_id: str
    user_id: str
    email: str
    role: Role


class RoleChanged(EventData, frozen=True, kw_only=True):
    user_id: str
    email: str
    from_role: Role
    to_role: Role


class MemberRemoved(EventData, frozen=True, kw_only=True):
    user_id: str
    email: str
    role: Role
    kept_api_keys: list[str] = []  # keys the member created that the remover kept (v1.1); they now answer to the remover


class SeatAdded(EventData, frozen=True, kw_only=True):
    quantity: int
    seats_total: int
    unit_price_cents: int
    charge_cents: int
    billing_period_start: UtcTime
    billing_period_end: UtcTime


class SeatRemoved(EventData, frozen=True, kw_only=True):
    quantity: int
    seats_total: int
    unit_price_cents: int
    credit_cents: int
    billing_period_start: UtcTime
    billing_period_end: UtcTime


class ApiKeyCreated(EventData, frozen=True, kw_only=True):
    key_id: str
    name: str
    prefix: str
    owner_user_id: str | None
    permissions: list[Permission]
    expires_at: UtcTime | None
    created_by: Actor | None = None  # who minted it; null for keys recorded before v1.1


class ApiKeyRevoked(EventData, frozen=True, kw_only=True):
    key_id: str
    reason: Literal["revoked", "member_removed"]


class RoleDescription(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    permissions: list[Permission]


class RoleDefined(EventData, frozen=True, kw_only=True):
    role_key: Role
    name: str
    description: str
    permissions: list[Permission]


class RoleUpdated(EventData, frozen=True, kw_only=True):
    role_key: Role
    name: str
    description: str
    permissions: list[Permission]
    previous: RoleDescription


class RoleDeleted(EventData, frozen=True, kw_only=True):
    role_key: Role
    previous: RoleDescription | None = None  # what the role was when deleted, for the audit's "before"


EVENT_DATA: dict[str, type[EventData]] = {
    cls.__name__: cls
    for cls in (
        OrganizationCreated,
        PlanChanged,
        MemberInvited,
        InvitationResent,
        InvitationRevoked,
        InvitationAccepted,
        RoleChanged,
        MemberRemoved,
        SeatAdded,
        SeatRemoved,
        ApiKeyCreated,
        ApiKeyRevoked,
        RoleDefined,
        RoleUpdated,
        RoleDeleted,
    )
}
EventType = Literal[tuple(EVENT_DATA)]  # type: ignore[valid-type]


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    event_type: str
    schema_version: int
    org_id: str
    sequence: int
    occurred_at: UtcTime
    actor: Actor
    command_id: str
    correlation_id: str | None
    data: Any

    def typed_data(self) -> EventData:
        """The data as its event type's struct (raises KeyError for an unknown type)."""
        return msgspec.convert(self.data, EVENT_DATA[self.event_type], strict=False)


def decode_envelope(body: bytes) -> Envelope:
    return msgspec.json.decode(body, type=Envelope)
