"""Audit entries, pure: one per event, hash-chained per organization.

`hash = sha256_hex(prev_hash + "\\n" + canonical_json(entry without prev_hash and hash))`, where the
entry is exactly what a search returns, so anyone can recompute the chain from an export.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from shared.contract.events import Envelope

GENESIS_HASH = "0" * 64

ACTIONS = {
    "OrganizationCreated": "organization.created",
    "PlanChanged": "plan.changed",
    "MemberInvited": "member.invited",
    "InvitationResent": "invitation.resent",
    "InvitationRevoked": "invitation.revoked",
    "InvitationAccepted": "invitation.accepted",
    "RoleChanged": "member.role_changed",
    "MemberRemoved": "member.removed",
    "SeatAdded": "seats.added",
    "SeatRemoved": "seats.removed",
    "ApiKeyCreated": "api_key.created",
    "ApiKeyRevoked": "api_key.revoked",
}


def action_of(event_type: str) -> str:
    return ACTIONS.get(event_type, f"unknown.{event_type}")


def rfc3339(moment: Any) -> str:
    """The timestamp exactly as the wire shows it (UTC, `Z`, microseconds only when there are any)."""
    return msgspec.json.encode(moment).decode().strip('"')


def targets_of(event: Envelope) -> list[dict[str, str]]:
    data = event.data
    org = {"type": "organization", "id": event.org_id}
    match event.event_type:
        case "OrganizationCreated":
            return [org, {"type": "user", "id": data["owner_user_id"]}]
        case "MemberInvited" | "InvitationResent" | "InvitationRevoked":
            return [{"type": "invitation", "id": data["invitation_id"]}, {"type": "email", "id": data["email"]}]
        case "InvitationAccepted":
            return [{"type": "invitation", "id": data["invitation_id"]}, {"type": "user", "id": data["user_id"]}]
        case "RoleChanged" | "MemberRemoved":
            return [{"type": "user", "id": data["user_id"]}, {"type": "email", "id": data["email"]}]
        case "ApiKeyCreated":
            owner = [{"type": "user", "id": data["owner_user_id"]}] if data.get("owner_user_id") else []
            return [{"type": "api_key", "id": data["key_id"]}, *owner]
        case "ApiKeyRevoked":
            return [{"type": "api_key", "id": data["key_id"]}]
    return [org]


def metadata_of(event: Envelope) -> dict[str, Any]:
    """The event's data, with what changed as `before` and `after` where there is a change."""
    data = dict(event.data)
    match event.event_type:
        case "RoleChanged":
            return {"email": data["email"], "before": {"role": data["from_role"]}, "after": {"role": data["to_role"]}}
        case "PlanChanged":
            return {
                "before": {"plan": data["from_plan"]},
                "after": {"plan": data["to_plan"], "seats_included": data["seats_included"]},
                "billing_anchor": data["billing_anchor"],
            }
        case "SeatAdded":
            return {**data, "before": {"seats_total": data["seats_total"] - data["quantity"]}, "after": {"seats_total": data["seats_total"]}}
        case "SeatRemoved":
            return {**data, "before": {"seats_total": data["seats_total"] + data["quantity"]}, "after": {"seats_total": data["seats_total"]}}
    return data


def entry_for(event: Envelope, seq: int, prev_hash: str) -> dict[str, Any]:
    entry = {
        "entry_id": f"aud_{event.event_id}",
        "org_id": event.org_id,
        "seq": seq,
        "occurred_at": rfc3339(event.occurred_at),
        "action": action_of(event.event_type),
        "actor": {"type": event.actor.type, "id": event.actor.id},
        "targets": targets_of(event),
        "metadata": metadata_of(event),
        "event_id": event.event_id,
        "command_id": event.command_id,
        "correlation_id": event.correlation_id,
    }
    return {**entry, "prev_hash": prev_hash, "hash": chain_hash(prev_hash, entry)}


def canonical_json(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key not in ("prev_hash", "hash")}
    return hashlib.sha256((prev_hash + "\n" + canonical_json(body)).encode()).hexdigest()
