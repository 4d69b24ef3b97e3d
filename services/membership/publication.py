"""How a recorded domain event appears on the stream: subject, headers and the contract's envelope."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from shared import subjects
from shared.contract.common import Actor
from shared.contract.events import EVENT_DATA, SCHEMA_VERSION, Envelope

from .domain.events import OrganizationEvent

NOTIFICATION_HEADER = "Membership-Notification-Id"
_PROVENANCE = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "org_id",
        "event_id",
        "actor",
        "command_id",
        "correlation_id",
        "result",
        "secret_hash",
    }
)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Publication:
    subject: str
    event_id: str
    body: bytes


def envelope_of(event: OrganizationEvent) -> Envelope:
    event_type = type(event).__name__
    fields = {name: value for name, value in vars(event).items() if name not in _PROVENANCE}
    return Envelope(
        event_id=event.event_id,
        event_type=event_type,
        schema_version=SCHEMA_VERSION,
        org_id=event.org_id,
        sequence=event.originator_version,
        occurred_at=event.timestamp,
        actor=msgspec.convert(event.actor, Actor),
        command_id=event.command_id,
        correlation_id=event.correlation_id,
        data=msgspec.convert(fields, EVENT_DATA[event_type]),
    )


def publication_of(event: OrganizationEvent) -> Publication:
    envelope = envelope_of(event)
    return Publication(subjects.event(envelope.org_id, envelope.event_type), envelope.event_id, _encoder.encode(envelope))
