"""`audit.query.search` takes as `target_id` every id an entry's targets carry.

Invitation and member entries carry the invitee's address as a target `{"type": "email", "id": ...}`;
the query's `target_id` accepted only the id grammar ([A-Za-z0-9_-]{1,64}), so a search for that target
was refused with `validation_error`. It takes any address membership stores (up to 254 characters, ASCII
after normalization, so as many octets) and still refuses whitespace, control characters and anything
longer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.entries import entry_for
from shared.contract.common import Actor, normalize_email
from shared.contract.events import Envelope
from shared.contract.queries import AuditSearch

ADDRESS = "p3@example.com"
DATA_OF = {
    "MemberInvited": {
        "invitation_id": "inv_1",
        "email": ADDRESS,
        "role": "developer",
        "invited_by": {"type": "user", "id": "usr_1"},
        "expires_at": "2026-01-09T00:00:00Z",
    },
    "InvitationResent": {"invitation_id": "inv_1", "email": ADDRESS, "expires_at": "2026-01-16T00:00:00Z"},
    "InvitationRevoked": {"invitation_id": "inv_1", "email": ADDRESS},
    "MemberRemoved": {"user_id": "usr_2", "email": ADDRESS, "role": "developer"},
    "RoleChanged": {"user_id": "usr_2", "email": ADDRESS, "from_role": "developer", "to_role": "admin"},
    "RoleDefined": {"role_key": "billing-viewer", "name": "Billing viewer", "description": "", "permissions": ["billing:read"]},
}


def searched_for(target_id: str) -> str | None:
    body = msgspec.json.encode({"org_id": "org_1", "target_id": target_id})
    return msgspec.json.decode(body, type=AuditSearch).target_id


def an_entry(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    event = Envelope(
        event_id="evt_1",
        event_type=event_type,
        schema_version=1,
        org_id="org_1",
        sequence=2,
        occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
        actor=Actor(type="user", id="usr_1"),
        command_id="cmd_1",
        correlation_id=None,
        data=data,
    )
    return entry_for(event, 2, "0" * 64)


@pytest.mark.parametrize("event_type", sorted(DATA_OF))
def test_every_target_id_an_entry_carries_can_be_searched_for(event_type: str) -> None:
    entry = an_entry(event_type, DATA_OF[event_type])
    if "email" in DATA_OF[event_type]:
        assert {"type": "email", "id": ADDRESS} in entry["targets"]
    for target in entry["targets"]:
        assert searched_for(target["id"]) == target["id"]


@settings(max_examples=300, deadline=None)
@given(raw=st.emails())
def test_every_address_membership_stores_can_be_searched_for(raw: str) -> None:
    try:
        stored = normalize_email(raw)
    except ValueError:
        return
    assert searched_for(stored) == stored


@pytest.mark.parametrize("longest", ["a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 58]) + ".io", "x" * 254])
def test_an_id_of_254_characters_is_taken(longest: str) -> None:
    assert len(longest) == 254
    assert searched_for(longest) == longest


@pytest.mark.parametrize(
    "refused",
    [
        "",
        "x" * 255,
        "a b@example.com",
        "a@example.com\n",
        "a@example.com\r\nX: y",
        "\ta@example.com",
        "a\u00a0b@example.com",
        "a\u2003b",
        "a\u2028b",
        "a\u202eb",
        "a\x00b",
        "a\x7fb",
        "a\x85b",
    ],
)
def test_whitespace_controls_and_anything_longer_are_refused(refused: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.target_id"):
        searched_for(refused)


@given(char=st.characters(categories=("Cc", "Zs", "Zl", "Zp")) | st.sampled_from(list("\u202a\u202e\u2066\u2069")))
def test_no_control_or_space_character_is_taken_anywhere_in_an_id(char: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        searched_for(f"a{char}b@example.com")
