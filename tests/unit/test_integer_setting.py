"""`integer_setting`: the one reader of whole-number settings (PARTITIONS, PARTITION, STREAM_REPLICAS,
PROJECTION_LINGER_MS)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.membership.config import MembershipSettings
from services.notifier.config import NotifierSettings
from shared.settings import ConfigurationError, integer_setting


def test_unset_or_blank_is_the_default_and_white_space_around_a_number_is_ignored() -> None:
    assert integer_setting({}, "N", 7) == integer_setting({"N": "  "}, "N", 7) == 7
    assert integer_setting({"N": " -3 "}, "N", 7) == -3


@pytest.mark.parametrize(
    ("low", "high", "given", "says"),
    [
        (1, 5, "0", "N must be between 1 and 5, not 0"),
        (1, None, "0", "N must be at least 1, not 0"),
        (None, 5, "6", "N must be at most 5, not 6"),
        (None, None, "x", "N must be a whole number, not 'x'"),
        (None, None, "9" * 50, "N must be a whole number, not '" + "9" * 40 + "'... (50 characters)"),
    ],
)
def test_a_value_out_of_its_bounds_or_not_a_whole_number_is_refused_in_words(low, high, given: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        integer_setting({"N": given}, "N", 0, low, high)
    assert str(refused.value) == says


@given(st.text(max_size=30))
def test_any_text_is_a_whole_number_in_range_or_one_configuration_error(text: str) -> None:
    try:
        value = integer_setting({"N": text}, "N", 0, -(10**6), 10**6)
    except ConfigurationError as refused:
        assert str(refused).startswith("N must be ") and len(str(refused)) < 500  # 40 characters, escaped
    else:
        assert value == (int(text.strip()) if text.strip() else 0)


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (lambda env: MembershipSettings.from_env(env), "WORKER_THREADS"),
        (lambda env: MembershipSettings.from_env(env), "RELAY_BATCH_SIZE"),
        (lambda env: MembershipSettings.from_env(env), "COMMAND_RETENTION_HOURS"),
        (lambda env: NotifierSettings.from_env(env), "NOTIFIER_SEND_BATCH"),
        (lambda env: NotifierSettings.from_env(env), "SMTP_TIMEOUT_SECONDS"),
        (lambda env: NotifierSettings.from_env(env), "NOTIFIER_POLL_SECONDS"),
        (lambda env: MembershipSettings.from_env(env), "ACCESS_HEARTBEAT_SECONDS"),
    ],
)
@pytest.mark.parametrize("given", ["abc", "0" * 4301, "-1", "nan", "inf"])
def test_membership_and_notifier_settings_refuse_a_bad_value_as_a_configuration_error(read, name: str, given: str) -> None:
    """Found by review: bare int() and float() gave a traceback and exit 1, not one line and exit 78."""
    with pytest.raises(ConfigurationError) as refused:
        read({name: given})
    assert len(str(refused.value)) < 500
