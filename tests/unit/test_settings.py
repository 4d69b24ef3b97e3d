"""The server secret has no default: missing, unreadable or weak, the settings refuse it and say why."""

import secrets
import stat
from pathlib import Path

import pytest

from devstack.server_secret import secret_for_services
from shared.settings import ConfigurationError, Settings

STRONG = secrets.token_urlsafe(48)


def test_without_a_server_secret_the_settings_refuse_and_say_how_to_set_one() -> None:
    with pytest.raises(ConfigurationError, match="SERVER_SECRET is not set"):
        Settings.from_env({})


def test_an_empty_server_secret_counts_as_none() -> None:
    with pytest.raises(ConfigurationError, match="SERVER_SECRET is not set"):
        Settings.from_env({"SERVER_SECRET": ""})


def test_a_short_secret_is_refused_without_echoing_it() -> None:
    weak = "correct-horse-battery-staple"  # 28 characters

    with pytest.raises(ConfigurationError, match="too short") as refused:
        Settings.from_env({"SERVER_SECRET": weak})

    assert weak not in str(refused.value)


def test_a_secret_built_in_code_is_held_to_the_same_rule() -> None:
    with pytest.raises(ConfigurationError, match="too short"):
        Settings(server_secret="x" * 31)


def test_the_environment_secret_is_used_and_its_source_named() -> None:
    settings = Settings.from_env({"SERVER_SECRET": STRONG})

    assert settings.server_secret == STRONG
    assert settings.server_secret_source == "the environment (SERVER_SECRET)"
    assert STRONG not in repr(settings)


def test_a_secret_file_is_read_and_its_path_named(tmp_path: Path) -> None:
    path = tmp_path / "server-secret"
    path.write_text(STRONG + "\n")

    settings = Settings.from_env({"SERVER_SECRET_FILE": str(path)})

    assert settings.server_secret == STRONG
    assert str(path) in settings.server_secret_source


def test_an_unreadable_secret_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Settings.from_env({"SERVER_SECRET_FILE": str(tmp_path / "absent")})


def test_two_sources_at_once_are_refused_rather_than_one_silently_ignored(tmp_path: Path) -> None:
    path = tmp_path / "server-secret"
    path.write_text(STRONG)

    with pytest.raises(ConfigurationError, match="both"):
        Settings.from_env({"SERVER_SECRET": STRONG, "SERVER_SECRET_FILE": str(path)})


def test_make_run_generates_a_secret_once_for_its_owner_only_and_reuses_it(tmp_path: Path) -> None:
    first, said_first = secret_for_services(tmp_path / "var", {})
    path = Path(first["SERVER_SECRET_FILE"])
    generated = path.read_text()

    again, said_again = secret_for_services(tmp_path / "var", {})

    assert again == first and path.read_text() == generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "generated" in said_first and "earlier run" in said_again
    assert generated.strip() not in said_first + said_again
    assert Settings.from_env(first).server_secret == generated.strip()


def test_make_run_passes_an_explicit_secret_on_and_writes_none(tmp_path: Path) -> None:
    added, said = secret_for_services(tmp_path / "var", {"SERVER_SECRET": STRONG})

    assert added == {}  # the services inherit SERVER_SECRET itself
    assert "from the environment" in said
    assert not (tmp_path / "var").exists()
