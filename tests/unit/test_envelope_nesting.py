"""An envelope nested deeper than MAX_NESTING is undecodable (msgspec.DecodeError, as malformed JSON is),
never a RecursionError that would escape a consumer and stop it at that message for good."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.contract.events import MAX_NESTING, decode_envelope, decode_typed_envelope, refuse_deep_nesting
from shared.rebuild import Batch

ENVELOPE = {
    "event_id": "evt_1",
    "event_type": "SomethingNewer",
    "schema_version": 1,
    "org_id": "org_1",
    "sequence": 1,
    "occurred_at": "2026-03-01T00:00:00Z",
    "actor": {"type": "system", "id": "platform"},
    "command_id": "c",
    "correlation_id": None,
    "data": {},
}
DECODERS = [decode_envelope, decode_typed_envelope]


def nested(levels: int) -> Any:
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def body_with(data: Any) -> bytes:
    return msgspec.json.encode({**ENVELOPE, "data": {"deep": data}})


def body_nested(levels: int) -> bytes:
    """The envelope with `nested(levels)` as its data's `deep`, written directly: msgspec will not encode
    past about a thousand levels either."""
    opening, closing = b"", b""
    for level in reversed(range(levels)):
        opening += b"[" if level % 2 else b'{"k":'
        closing = (b"]" if level % 2 else b"}") + closing
    return body_with("HERE").replace(b'"HERE"', opening + b"1" + closing)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("levels", [MAX_NESTING - 2, MAX_NESTING - 1, 600, 1500, 100_000])
def test_an_envelope_nested_past_the_limit_is_undecodable_and_one_within_it_decodes(decode, levels: int) -> None:
    body = body_nested(levels)  # the envelope and its data add two levels
    if levels + 2 <= MAX_NESTING:
        assert decode(body).data["deep"] == nested(levels)
    else:
        with pytest.raises(msgspec.DecodeError, match="nested"):
            decode(body)


@pytest.mark.parametrize("decode", DECODERS)
def test_brackets_inside_strings_and_many_side_by_side_are_not_depth(decode) -> None:
    assert decode(body_with(["[" * 1000, "{" * 1000, '\\"[' * 300])).sequence == 1
    assert len(decode(body_with([{"a": [1]}] * 5000)).data["deep"]) == 5000


def test_a_replay_counts_a_deep_message_undecodable_and_goes_on() -> None:
    deep = SimpleNamespace(data=body_nested(1500), metadata=SimpleNamespace(sequence=SimpleNamespace(stream=1)))
    fine = SimpleNamespace(data=body_with(1), metadata=SimpleNamespace(sequence=SimpleNamespace(stream=2)))
    batch = Batch.of([deep, fine], decode_envelope)
    assert (batch.undecodable, len(batch.events), batch.position) == (1, 1, 2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab', max_size=4), children, max_size=3)
    ),
    max_leaves=400,
)


@given(json_values)
def test_the_depth_refused_is_exactly_the_depth_of_the_json(value: Any) -> None:
    body = msgspec.json.encode(value)
    if depth(value) > MAX_NESTING:
        with pytest.raises(msgspec.DecodeError):
            refuse_deep_nesting(body)
    else:
        refuse_deep_nesting(body)


@given(st.integers(min_value=MAX_NESTING - 3, max_value=MAX_NESTING + 3), st.text(alphabet='[]{}"\\x', max_size=20))
def test_around_the_limit_with_brackets_in_keys_and_strings(levels: int, text: str) -> None:
    value: Any = text
    for level in range(levels):
        value = [value, text] if level % 2 else {text: value}
    body = msgspec.json.encode(value)
    if levels > MAX_NESTING:
        with pytest.raises(msgspec.DecodeError):
            refuse_deep_nesting(body)
    else:
        refuse_deep_nesting(body)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xed\xa0\x80", b"\xc3"])
def test_text_that_is_not_utf8_is_undecodable_not_a_unicode_error(decode, bad: bytes) -> None:
    """Found by review: msgspec refuses it with a UnicodeDecodeError of its own, which escaped the
    consumer as the RecursionError did."""
    body = body_with("HERE").replace(b"HERE", bad)
    with pytest.raises(msgspec.DecodeError, match="UTF-8"):
        decode(body)
