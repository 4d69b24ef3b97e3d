"""The canonical JSON every audit hash is taken over: msgspec writes it now, byte for byte what
`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` wrote, so no chain built
before or after the change verifies differently."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit.entries import canonical_json, chain_hash, chained_entry, entry_for, stored_json
from shared.contract.common import Actor
from shared.contract.events import Envelope


def reference(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Any text: controls, quotes, backslashes, U+2028, astral characters (no lone surrogates: the
# envelope decoder refuses them); integers past 64 bits; floats at every exponent.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | text
numbers = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    scalars | numbers, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=20
)


@settings(max_examples=400)
@given(st.dictionaries(text, json_values, max_size=6))
def test_canonical_json_is_what_json_dumps_wrote(document):
    assert canonical_json(document) == reference(document)


@settings(max_examples=300)
@given(
    data=st.dictionaries(text, json_values, max_size=5),
    target=json_values,
    event_type=st.sampled_from(["SomethingNew", "MemberInvited", "RoleChanged"]),
)
def test_an_entry_hash_is_the_hash_of_its_reference_json(data, target, event_type):
    """Whatever a forged event carries, floats included, in its data or in what becomes a target
    (a RoleChanged's user_id is a target, not metadata): entry_for hashes what the spec says."""
    if event_type == "MemberInvited":
        data = {**data, "invitation_id": target, "email": "a@b.io"}
    if event_type == "RoleChanged":
        data = {**data, "user_id": target, "email": "a@b.io", "from_role": "admin", "to_role": "developer"}
    event = Envelope(
        event_id="evt_1",
        event_type=event_type,
        schema_version=1,
        org_id="org_1",
        sequence=1,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        actor=Actor(type="user", id="usr_1"),
        command_id="cmd_1",
        correlation_id=None,
        data=data,
    )
    entry = entry_for(event, 7, "a" * 64)
    assert_stored_as_hashed(event)
    body = {key: value for key, value in entry.items() if key not in ("prev_hash", "hash")}
    expected = hashlib.sha256(("a" * 64 + "\n" + reference(body)).encode()).hexdigest()
    assert entry["hash"] == expected == chain_hash("a" * 64, entry)


def assert_stored_as_hashed(event: Envelope) -> None:
    """What goes into the entry's jsonb columns (unsorted, when no float is about) is the value that was
    hashed; with a float anywhere in its data, the very text that was hashed."""
    entry, holds_float = chained_entry(event, 7, "a" * 64)
    # Taken over the event's data, which may hold a float the entry leaves out: never missing one the entry holds.
    assert holds_float == floats_in(event.data)
    assert holds_float or not (floats_in(entry["metadata"]) or floats_in(entry["targets"]))
    for column in ("actor", "targets", "metadata"):
        stored = stored_json(entry[column], holds_float)
        assert json.loads(stored) == json.loads(reference(entry[column]))
        if holds_float:
            assert stored == reference(entry[column])


def floats_in(value: Any) -> bool:
    if isinstance(value, dict):
        return any(floats_in(item) for item in value.values())
    if isinstance(value, list):
        return any(floats_in(item) for item in value)
    return isinstance(value, float)
