"""Configuration from environment variables; every default works on one machine with no setup,
except the server secret, which has no default: a service without one refuses to start."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MINIMUM_SECRET_LENGTH = 32
MAX_STREAM_REPLICAS = 5  # JetStream's own limit
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,18}")  # ASCII digits only, and short enough for int() to be cheap
HOW_TO_MAKE_A_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class ConfigurationError(ValueError):
    """A setting a service cannot start with; the message says which one and why, never a secret's value."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Signs invitation links and seals stored replies; never printed, not even in a repr.
    server_secret: str = field(repr=False)
    server_secret_source: str = "given to Settings directly"
    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/team_members"
    smtp_url: str = "smtp://127.0.0.1:2525"
    public_url: str = "http://localhost:8080"
    stream_replicas: int = 1  # how the bus keeps the streams every service declares
    log_level: str = "info"

    def __post_init__(self) -> None:
        if len(self.server_secret) < MINIMUM_SECRET_LENGTH:
            raise ConfigurationError(
                f"the server secret from {self.server_secret_source} is too short "
                f"({len(self.server_secret)} characters; at least {MINIMUM_SECRET_LENGTH}). "
                f"Make one with: {HOW_TO_MAKE_A_SECRET}"
            )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Raises ConfigurationError when the server secret is missing, unreadable or weak."""
        env = dict(os.environ if env is None else env)
        server_secret, server_secret_source = server_secret_from(env)
        defaults = cls(server_secret=server_secret)
        return cls(
            nats_url=env.get("NATS_URL", defaults.nats_url),
            database_url=env.get("DATABASE_URL", defaults.database_url),
            smtp_url=env.get("SMTP_URL", defaults.smtp_url),
            public_url=env.get("PUBLIC_URL", defaults.public_url).rstrip("/"),
            server_secret=server_secret,
            server_secret_source=server_secret_source,
            stream_replicas=integer_setting(env, "STREAM_REPLICAS", defaults.stream_replicas, 1, MAX_STREAM_REPLICAS),
            log_level=env.get("LOG_LEVEL", defaults.log_level),
        )


def integer_setting(env: Mapping[str, str], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """A whole-number setting: unset or blank, `default`; else ASCII digits (perhaps a minus) within
    `low`..`high` where given. Anything else is a ConfigurationError that names the setting and shows
    the start of the value."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _WHOLE_NUMBER.fullmatch(raw):
        raise ConfigurationError(f"{name} must be a whole number, not {_shortened(raw)}")
    value = int(raw)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigurationError(f"{name} must be {_range(low, high)}, not {value}")
    return value


def positive_number_setting(env: Mapping[str, str], name: str, default: float) -> float:
    """A setting that is a positive, finite number (a duration, say): unset or blank, `default`; anything
    else is a ConfigurationError that names the setting and shows the start of the value."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive number, not {_shortened(raw)}") from None
    if not 0 < value < math.inf:  # NaN fails both
        raise ConfigurationError(f"{name} must be a positive number, not {_shortened(raw)}")
    return value


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _shortened(raw: str, keep: int = 40) -> str:
    return repr(raw) if len(raw) <= keep else f"{raw[:keep]!r}... ({len(raw)} characters)"


def server_secret_from(env: dict[str, str]) -> tuple[str, str]:
    """The secret and where it came from: SERVER_SECRET itself, or the file SERVER_SECRET_FILE names."""
    value = env.get("SERVER_SECRET", "")
    path = env.get("SERVER_SECRET_FILE", "")
    if value and path:
        raise ConfigurationError("both SERVER_SECRET and SERVER_SECRET_FILE are set; set only one")
    if value:
        return value, "the environment (SERVER_SECRET)"
    if path:
        try:
            from_file = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"SERVER_SECRET_FILE {path} cannot be read: {error}") from None
        return from_file, f"the file {path} (SERVER_SECRET_FILE)"
    raise ConfigurationError(
        "SERVER_SECRET is not set. It signs invitation links and seals stored replies, so it has no default: "
        f"set SERVER_SECRET (at least {MINIMUM_SECRET_LENGTH} characters, from your secret manager) "
        f"or SERVER_SECRET_FILE (a file holding it). Make one with: {HOW_TO_MAKE_A_SECRET}"
    )


def postgres_env(database_url: str, pool_size: int) -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for a `postgresql://` URL."""
    url = urlsplit(database_url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": "4",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        "CREATE_TABLE": "y",
    }
