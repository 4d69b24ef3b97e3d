"""Audit entries, pure: one per event, hash-chained per organization.

`hash = sha256_hex(prev_hash + "\\n" + canonical_json(entry without prev_hash and hash))`, where the
entry is exactly what a search returns, so anyone can recompute the chain from an export.
`ChainWalk` is that recomputation: `verify` walks the stored entries through it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from decimal import Decimal
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
    "RoleDefined": "role.defined",
    "RoleUpdated": "role.updated",
    "RoleDeleted": "role.deleted",
}


UNKNOWN_ACTION_PREFIX = "unknown."
MAX_ACTION_LENGTH = 64  # what `audit.query.search` accepts as an action
_OUTSIDE_ACTION_GRAMMAR = re.compile(r"[^A-Za-z0-9_-]")


def action_of(event_type: str) -> str:
    """The contract's action; an event type this version does not know (a newer membership's) is
    recorded all the same, as `unknown.<EventType>`, with its data as metadata: never dead-lettered.
    Such a type is cut to what a search can ask for: letters, digits, `_` and `-` (anything else,
    a control or a bidi override say, becomes `_`), and 64 characters in all."""
    known = ACTIONS.get(event_type)
    if known is not None:
        return known
    return (UNKNOWN_ACTION_PREFIX + _OUTSIDE_ACTION_GRAMMAR.sub("_", event_type))[:MAX_ACTION_LENGTH]


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
        case "RoleDefined" | "RoleUpdated" | "RoleDeleted":
            return [{"type": "role", "id": data["role_key"]}]
    return [org]


def metadata_of(event: Envelope) -> dict[str, Any]:
    """The event's data, with what changed as `before` and `after` where there is a change."""
    if event.event_type not in ACTIONS:
        return _unknown_metadata(event.data)
    data = dict(event.data)
    match event.event_type:
        case "RoleChanged":
            before, after = {"role": data["from_role"]}, {"role": data["to_role"]}
            if "projects" in data:  # v1.4: the project scope, null for every project (absent from older events)
                before["projects"], after["projects"] = data.get("from_projects"), data["projects"]
            return {"email": data["email"], "before": before, "after": after}
        case "PlanChanged":
            return {
                "before": {"plan": data["from_plan"]},
                "after": {"plan": data["to_plan"], "seats_included": data["seats_included"]},
                "billing_anchor": data["billing_anchor"],
            }
        case "SeatAdded":
            return {
                **data,
                "before": {"seats_total": data["seats_total"] - data["quantity"]},
                "after": {"seats_total": data["seats_total"]},
            }
        case "SeatRemoved":
            return {
                **data,
                "before": {"seats_total": data["seats_total"] + data["quantity"]},
                "after": {"seats_total": data["seats_total"]},
            }
        case "RoleDefined":
            return {**_role_description(data), "before": {"permissions": []}, "after": {"permissions": data["permissions"]}}
        case "RoleUpdated":
            previous = data.get("previous") or {}
            return {
                **_role_description(data),
                "before": {key: previous.get(key) for key in ("name", "description", "permissions")},
                "after": {key: data[key] for key in ("name", "description", "permissions")},
            }
        case "RoleDeleted":
            previous = data.get("previous") or {}  # null name, description and permissions for a deletion recorded without it
            return {
                "role_key": data["role_key"],
                "name": previous.get("name"),
                "description": previous.get("description"),
                "before": {"permissions": previous.get("permissions")},
                "after": {"permissions": []},
            }
    return data


def _unknown_metadata(data: Any) -> dict[str, Any]:
    """Any JSON at all, kept as metadata: data that is not an object under `value`; text PostgreSQL
    refuses (NUL) spelled as its JSON escape, `\\u0000`, so the entry is stored rather than parked."""
    kept = _storable(data)
    return kept if isinstance(kept, dict) else {"value": kept}


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")  # jsonb refuses NUL (msgspec already refused lone surrogates)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _role_description(data: dict[str, Any]) -> dict[str, Any]:
    return {"role_key": data["role_key"], "name": data["name"], "description": data["description"]}


def entry_for(event: Envelope, seq: int, prev_hash: str) -> dict[str, Any]:
    return chained_entry(event, seq, prev_hash)[0]


def chained_entry(event: Envelope, seq: int, prev_hash: str) -> tuple[dict[str, Any], bool]:
    """The entry, and whether its data holds a float (see `canonical_json`; `stored_json` needs to know).

    The entry is hashed as PostgreSQL will give it back, or `verify` would find it edited: its time in
    UTC (an envelope's time need only carry an offset; a `timestamptz` reads back as `Z`), and floats
    as `jsonb` keeps them (`_as_jsonb_keeps`)."""
    # Only what comes from the event's data can hold a float (the rest is text and integers), and
    # targets and metadata only copy the data's values or add integers: one walk, over the data. A float
    # in data the entry leaves out costs only the slower, byte-identical `json` spelling.
    holds_float = _holds_float(event.data)
    if holds_float:
        event = msgspec.structs.replace(event, data=_as_jsonb_keeps(event.data))
    occurred_at = event.occurred_at if event.occurred_at.tzinfo is UTC else event.occurred_at.astimezone(UTC)
    entry = {
        "entry_id": f"aud_{event.event_id}",
        "org_id": event.org_id,
        "seq": seq,
        "occurred_at": rfc3339(occurred_at),
        "action": action_of(event.event_type),
        "actor": {"type": event.actor.type, "id": event.actor.id},
        "targets": targets_of(event),
        "metadata": metadata_of(event),
        "event_id": event.event_id,
        "command_id": event.command_id,
        "correlation_id": event.correlation_id,
    }
    body = _canonical(entry, holds_float)
    return {**entry, "prev_hash": prev_hash, "hash": _hash(prev_hash, body)}, holds_float


_sorted_compact = msgspec.json.Encoder(order="sorted").encode
_compact = msgspec.json.Encoder().encode


def stored_json(document: Any, holds_float: bool) -> str:
    """A part of an entry as the text of a jsonb column, which keeps no key order of its own: so the keys
    need no sorting, unless the entry holds a float, whose spelling is then `json`'s, as in its hash."""
    if holds_float:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _compact(document).decode()


def canonical_json(document: dict[str, Any]) -> str:
    """Keys sorted, no spaces, characters as they are: exactly what `json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)` writes, which is what every hash so far was taken over.

    msgspec writes the same bytes several times faster, except for floats (`1e+16` there, `1e16`
    here), which only an unknown event's data can carry: those documents still go through `json`."""
    return _canonical(document, _holds_float(document))


def _canonical(document: dict[str, Any], holds_float: bool) -> str:
    if holds_float:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _sorted_compact(document).decode()


def _as_jsonb_keeps(value: Any) -> Any:
    """`value` with each float as a `jsonb` column gives it back: its `numeric` has no negative zero, and
    a number Python spells with a positive exponent (`1e+16`, `1.5e+300`) comes back in whole digits,
    which read as an integer. Every other float comes back as Python spells it."""
    kind = type(value)
    if kind is float:
        if value == 0:
            return 0.0
        spelled = repr(value)
        return int(Decimal(spelled)) if "e+" in spelled else value
    if kind is dict:
        return {key: _as_jsonb_keeps(item) for key, item in value.items()}
    if kind is list:
        return [_as_jsonb_keeps(item) for item in value]
    return value


def _holds_float(document: Any) -> bool:
    pending = [document]
    while pending:
        value = pending.pop()
        kind = type(value)
        if kind is dict:
            pending.extend(value.values())
        elif kind is list:
            pending.extend(value)
        elif kind is float:
            return True
    return False


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    body = {key: value for key, value in entry.items() if key not in ("prev_hash", "hash")}
    return _hash(prev_hash, canonical_json(body))


def _hash(prev_hash: str, canonical_body: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical_body).encode()).hexdigest()


MISSING = "an entry is missing: the sequence skips it"
NOT_LINKED = "prev_hash does not continue the chain"
EDITED = "hash does not match the entry's content"
CUT_SHORT = "entries are missing at the end of the chain"


class ChainWalk:
    """Checks an organization's entries one at a time, in `seq` order, from the genesis or from a
    retention checkpoint (the `seq` and `hash` of the last entry removed), and names the first bad one."""

    def __init__(self, after_seq: int = 0, prev_hash: str = GENESIS_HASH) -> None:
        self.expected_seq = after_seq + 1
        self.prev_hash = prev_hash
        self.checked = 0

    def step(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """None while the chain holds; the verdict at its first bad entry."""
        problem = self._problem(entry)
        if problem is not None:
            return self._broken(self.expected_seq if problem == MISSING else entry["seq"], problem)
        self.prev_hash, self.expected_seq, self.checked = entry["hash"], self.expected_seq + 1, self.checked + 1
        return None

    def end(self, head_seq: int, head_hash: str) -> dict[str, Any]:
        """The verdict once every entry was stepped through: the walk must end at the chain's head."""
        if (head_seq, head_hash) != (self.expected_seq - 1, self.prev_hash):
            return self._broken(self.expected_seq, CUT_SHORT)
        return {"ok": True, "entries_checked": self.checked, "head_hash": self.prev_hash}

    def _problem(self, entry: dict[str, Any]) -> str | None:
        if entry["seq"] != self.expected_seq:
            return MISSING
        if entry["prev_hash"] != self.prev_hash:
            return NOT_LINKED
        if chain_hash(self.prev_hash, entry) != entry["hash"]:
            return EDITED
        return None

    def _broken(self, seq: int, reason: str) -> dict[str, Any]:
        return {"ok": False, "entries_checked": self.checked, "head_hash": self.prev_hash, "first_bad_seq": seq, "reason": reason}
