"""The consumer's small pieces, pure: the lag window's percentiles and the typed decoding of envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.audit.projection import AuditProjection
from services.billing.projection import BillingProjection
from shared.consumer import DEFAULT_LINGER, ConsumerSettings
from shared.contract import events as ev
from shared.metrics import LagRecorder
from shared.partitions import Partition
from shared.projector import MAX_LINGER_MS, consumer_settings, linger_from_env
from shared.settings import ConfigurationError

# -- the lag window, sorted only when it changed ---------------------------------------------

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.lists(st.floats(-5, 500, allow_nan=False), max_size=20)),
        st.tuples(st.just("ask"), st.sampled_from([0, 50, 99, 100])),
        st.tuples(st.just("reset"), st.none()),
    ),
    max_size=60,
)


@given(keep=st.integers(1, 30), steps=_steps)
@example(keep=5, steps=[("record", [0.3, 0.1]), ("ask", 99), ("record", [0.9]), ("ask", 99)])  # asked, then changed
def test_the_percentiles_are_those_of_the_window_sorted_afresh_whatever_was_asked_before(keep, steps) -> None:
    recorder, window, count = LagRecorder(keep=keep), [], 0
    for step, value in steps:
        if step == "record":
            recorder.record_seconds(value)
            window = (window + [lag * 1000 for lag in value])[-keep:]
            count += len(value)
        elif step == "reset":
            recorder.reset()
            window, count = [], 0
        else:
            ordered = sorted(window)
            expected = ordered[min(len(ordered) - 1, int(len(ordered) * value / 100))] if ordered else None
            assert recorder.percentile(value) == expected
        assert recorder.count == count


def test_a_lag_recorded_one_at_a_time_counts_as_in_a_batch() -> None:
    recorder = LagRecorder()
    recorder.record(timedelta(milliseconds=30))
    recorder.record_seconds([0.01, 0.02])
    assert recorder.summary() == {"events_applied": 3, "lag_p50_ms": 20.0, "lag_p99_ms": 30.0}


# -- envelopes decoded straight into their event type ----------------------------------------


def _envelope(event_type: str, data: dict) -> bytes:
    return msgspec.json.encode(
        {
            "event_id": "evt_1",
            "event_type": event_type,
            "schema_version": 1,
            "org_id": "org_1",
            "sequence": 7,
            "occurred_at": "2026-03-01T10:00:00Z",
            "actor": {"type": "user", "id": "u1"},
            "command_id": "cmd_1",
            "correlation_id": None,
            "data": data,
        }
    )


SEAT_ADDED = {
    "quantity": 2,
    "seats_total": 5,
    "unit_price_cents": 1000,
    "charge_cents": 1900,
    "billing_period_start": "2026-02-15T00:00:00Z",
    "billing_period_end": "2026-03-15T00:00:00Z",
    "added_later": "a field a newer producer sends",
}


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("SeatAdded", SEAT_ADDED),
        ("SeatAdded", {**SEAT_ADDED, "quantity": "2"}),  # lenient, as typed_data's conversion is
        (
            "OrganizationCreated",
            {
                "name": "A",
                "plan": "pro",
                "owner_user_id": "u",
                "owner_email": "o@a.io",
                "seats_included": 3,
                "unit_price_cents": 1000,
                "billing_anchor": "2026-01-31T10:00:00Z",
            },
        ),
        ("MemberRemoved", {"user_id": "u2", "email": "b@a.io", "role": "developer"}),
    ],
)
def test_a_typed_envelope_is_the_envelope_with_its_data_as_typed_data_gives_it(event_type, data) -> None:
    body = _envelope(event_type, data)
    plain, typed = ev.decode_envelope(body), ev.decode_typed_envelope(body)
    assert isinstance(typed, ev.Envelope) and isinstance(typed.data, ev.EVENT_DATA[event_type])
    assert typed.typed_data() == plain.typed_data()
    for field in ev.Envelope.__struct_fields__:
        if field != "data":
            assert getattr(typed, field) == getattr(plain, field)


def test_an_unknown_event_type_keeps_its_data_as_decoded() -> None:
    typed = ev.decode_typed_envelope(_envelope("SomethingNew", {"x": 1}))
    assert typed.data == {"x": 1}
    with pytest.raises(KeyError):
        typed.typed_data()


def test_data_that_does_not_fit_its_type_fails_where_typed_data_is_asked_for_as_before() -> None:
    body = _envelope("SeatAdded", {"quantity": 1})
    typed = ev.decode_typed_envelope(body)
    assert typed.data == {"quantity": 1}
    with pytest.raises(msgspec.ValidationError):
        typed.typed_data()
    with pytest.raises(msgspec.ValidationError):
        ev.decode_envelope(body).typed_data()


def test_a_body_that_is_no_envelope_is_refused_by_both() -> None:
    for decode in (ev.decode_envelope, ev.decode_typed_envelope):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            decode(b"not an envelope")
    assert datetime(2026, 3, 1, 10, tzinfo=UTC) == ev.decode_typed_envelope(_envelope("SeatAdded", SEAT_ADDED)).occurred_at


# -- each projection's largest batch -----------------------------------------------------------


def test_billing_and_audit_catch_up_in_larger_batches_than_a_projection_that_names_none() -> None:

    default = ConsumerSettings.for_service("notifier").batch_size
    assert consumer_settings("billing", BillingProjection(), Partition()).batch_size == 500 > default
    assert consumer_settings("audit", AuditProjection(), Partition()).batch_size == 500

    class Plain:
        schema = "plain"

    third = consumer_settings("audit", Plain(), Partition(3, 2))  # type: ignore[arg-type]
    assert (third.batch_size, third.durable, third.partition) == (default, "audit-p2", Partition(3, 2))


# -- how long a projector waits for its next batch to gather ---------------------------------------


def test_the_linger_comes_from_projection_linger_ms_in_whole_milliseconds() -> None:
    assert consumer_settings("billing", BillingProjection(), Partition(), env={}).linger == DEFAULT_LINGER
    assert consumer_settings("billing", BillingProjection(), Partition(), env={"PROJECTION_LINGER_MS": "0"}).linger == 0
    assert consumer_settings("audit", AuditProjection(), Partition(), env={"PROJECTION_LINGER_MS": "250"}).linger == 0.25
    assert linger_from_env({"PROJECTION_LINGER_MS": str(MAX_LINGER_MS)}) == MAX_LINGER_MS / 1000


def test_a_blank_linger_is_the_default_and_white_space_around_one_is_ignored() -> None:
    assert linger_from_env({"PROJECTION_LINGER_MS": ""}) == linger_from_env({"PROJECTION_LINGER_MS": "  "}) == DEFAULT_LINGER
    assert linger_from_env({"PROJECTION_LINGER_MS": " 35 "}) == 0.035


@pytest.mark.parametrize(
    "given", ["20ms", "-1", "0.5", "1e3", "٣", "²", "0x10", "1_000", "+5", str(MAX_LINGER_MS + 1), "9" * 40, "0" * 4301]
)
def test_a_linger_that_is_not_a_whole_number_of_milliseconds_up_to_the_most_refuses_the_start(given: str) -> None:
    with pytest.raises(ConfigurationError, match="PROJECTION_LINGER_MS must be ") as refused:
        linger_from_env({"PROJECTION_LINGER_MS": given})
    assert len(str(refused.value)) < 120  # the value shown is cut short
