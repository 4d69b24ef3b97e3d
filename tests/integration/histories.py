"""Organization histories as the stream carries them, for projection tests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from shared import pricing, subjects

UNIT = 1000


class OrgHistory:
    def __init__(self, org_id: str, anchor: datetime, plan: str = "pro") -> None:
        self.org_id = org_id
        self.anchor = anchor
        self.sequence = 0
        self.seats = 0
        self.events: list[dict[str, Any]] = []
        self._event(
            "OrganizationCreated",
            anchor,
            {
                "name": org_id,
                "plan": plan,
                "owner_user_id": "owner",
                "owner_email": "owner@example.com",
                "seats_included": 3,
                "unit_price_cents": UNIT,
                "billing_anchor": anchor,
            },
        )

    def _event(self, event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
        self.sequence += 1
        event = {
            "event_id": f"evt_{uuid.uuid4().hex}",
            "event_type": event_type,
            "schema_version": 1,
            "org_id": self.org_id,
            "sequence": self.sequence,
            "occurred_at": at,
            "actor": {"type": "system", "id": "platform"},
            "command_id": f"cmd-{self.sequence}",
            "correlation_id": None,
            "data": data,
        }
        self.events.append(event)
        return event

    def seats_added(self, quantity: int, at: datetime, charge_cents: int | None = None) -> dict[str, Any]:
        start, end = pricing.billing_period(self.anchor, at)
        self.seats += quantity
        charge = pricing.prorate(UNIT, quantity, start, end, at) if charge_cents is None else charge_cents
        return self._event(
            "SeatAdded",
            at,
            {
                "quantity": quantity,
                "seats_total": 3 + self.seats,
                "unit_price_cents": UNIT,
                "charge_cents": charge,
                "billing_period_start": start,
                "billing_period_end": end,
            },
        )

    def seats_removed(self, quantity: int, at: datetime) -> dict[str, Any]:
        start, end = pricing.billing_period(self.anchor, at)
        self.seats -= quantity
        return self._event(
            "SeatRemoved",
            at,
            {
                "quantity": quantity,
                "seats_total": 3 + self.seats,
                "unit_price_cents": UNIT,
                "credit_cents": pricing.prorate(UNIT, quantity, start, end, at),
                "billing_period_start": start,
                "billing_period_end": end,
            },
        )

    def invited(self, at: datetime) -> dict[str, Any]:
        return self._event(
            "MemberInvited",
            at,
            {
                "invitation_id": f"inv_{self.sequence}",
                "email": f"p{self.sequence}@example.com",
                "role": "developer",
                "invited_by": {"type": "system", "id": "platform"},
                "expires_at": at,
            },
        )


async def publish(js: Any, event: dict[str, Any], body: bytes | None = None, msg_id: str | None = None) -> None:
    await js.publish(
        subjects.event(event["org_id"], event["event_type"]),
        body if body is not None else msgspec.json.encode(event),
        headers={"Nats-Msg-Id": msg_id or event["event_id"]},
    )
