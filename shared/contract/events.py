"""Events published on the `MEMBERSHIP` stream: an envelope around one of these data bodies.

Consumers decode leniently: unknown fields are ignored so that producers may add fields.
"""

from __future__ import annotations

import re
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
    projects: list[str] | None = None  # the scope the member gets on accepting; null: every project (v1.4)


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
    projects: list[str] | None = None  # the new member's project scope; null: every project (v1.4)


class RoleChanged(EventData, frozen=True, kw_only=True):
    user_id: str
    email: str
    from_role: Role
    to_role: Role
    from_projects: list[str] | None = None  # the member's project scope before and after; null: every project (v1.4)
    projects: list[str] | None = None


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
    projects: list[str] | None = None  # the key's project scope; null: every project (v1.4)


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
        if isinstance(self.data, EventData):  # decoded typed already (`decode_typed_envelope`)
            return self.data
        return msgspec.convert(self.data, EVENT_DATA[self.event_type], strict=False)


class _EnvelopeOfRawData(Envelope, frozen=True, kw_only=True):
    data: msgspec.Raw


_envelope_decoder = msgspec.json.Decoder(Envelope)
_raw_data_decoder = msgspec.json.Decoder(_EnvelopeOfRawData)
# strict=False: as lenient as `typed_data`'s conversion.
_data_decoders = {name: msgspec.json.Decoder(cls, strict=False) for name, cls in EVENT_DATA.items()}


# How deeply an envelope's objects and arrays may nest. Far past any event's (membership's nest three
# or four levels), and far below what the code that walks an event's data can recurse through: past
# about a thousand levels msgspec and Python raise RecursionError, which no consumer expects, so one
# such message on the stream would stop every projector. Deeper is undecodable, like malformed JSON
# (and like text that is not UTF-8, which msgspec refuses with a UnicodeDecodeError of its own).
MAX_NESTING = 128
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def refuse_deep_nesting(body: bytes) -> None:
    """Raises msgspec.DecodeError when `body`, JSON already decoded once, nests objects and arrays
    deeper than MAX_NESTING (its strings are whole, so taking them out is linear). Counting the brackets
    bounds the depth at no cost for every body but one holding that many of them."""
    if body.count(b"{") + body.count(b"[") <= MAX_NESTING:
        return
    depth = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub(b"", body)):
        depth += 1 if bracket.group() in (b"{", b"[") else -1
        if depth > MAX_NESTING:
            raise msgspec.DecodeError(f"JSON nested more than {MAX_NESTING} levels deep")


def decode_envelope(body: bytes) -> Envelope:
    try:
        envelope = _envelope_decoder.decode(body)
    except RecursionError:
        raise msgspec.DecodeError(f"JSON nested more than {MAX_NESTING} levels deep") from None
    except UnicodeDecodeError:
        raise msgspec.DecodeError("JSON text that is not UTF-8") from None
    refuse_deep_nesting(body)
    return envelope


def decode_typed_envelope(body: bytes) -> Envelope:
    """The envelope with its data decoded straight into its event type's struct, in one pass over the
    JSON (no dict in between); an unknown type's data stays as decoded. Data that does not fit its
    type is left as a dict too, so that it fails where `typed_data` is asked for, as it always has."""
    try:
        envelope = _raw_data_decoder.decode(body)
        decoder = _data_decoders.get(envelope.event_type)
        try:
            data = decoder.decode(envelope.data) if decoder is not None else msgspec.json.decode(envelope.data)
        except msgspec.ValidationError:
            data = msgspec.json.decode(envelope.data)
    except RecursionError:
        raise msgspec.DecodeError(f"JSON nested more than {MAX_NESTING} levels deep") from None
    except UnicodeDecodeError:
        raise msgspec.DecodeError("JSON text that is not UTF-8") from None
    refuse_deep_nesting(body)
    # The same fields, the data swapped in place of its bytes: still an Envelope (a subclass).
    return msgspec.structs.replace(envelope, data=data)
