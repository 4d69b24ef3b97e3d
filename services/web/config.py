"""The edge's own settings, from environment variables (the shared ones come from `shared.settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import ConfigurationError

PLATFORM_ALGORITHMS = ("HS256", "EdDSA", "RS256")
MINIMUM_HS256_SECRET_LENGTH = 32


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # How long the edge waits for a service's reply before it answers 503 with Retry-After.
    bus_timeout_seconds: float = 5.0
    retry_after_seconds: int = 2
    max_body_bytes: int = 64 * 1024
    max_connections: int = 4096  # lowered to what the file limit allows (connections.py)
    request_read_seconds: float = 15.0  # a request's headers and body arrive whole within this
    # A session cookie's lifetime; signed-out session ids are kept in NATS this long.
    session_hours: float = 12.0
    # `teamctl login` links; an operator whose platform signs users in may turn them off.
    local_sign_in: bool = True

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        try:
            settings = cls(
                host=env.get("WEB_HOST", d.host),
                port=int(env.get("WEB_PORT", d.port)),
                bus_timeout_seconds=float(env.get("WEB_BUS_TIMEOUT_SECONDS", d.bus_timeout_seconds)),
                retry_after_seconds=int(env.get("WEB_RETRY_AFTER_SECONDS", d.retry_after_seconds)),
                max_body_bytes=int(env.get("WEB_MAX_BODY_BYTES", d.max_body_bytes)),
                max_connections=int(env.get("WEB_MAX_CONNECTIONS", d.max_connections)),
                request_read_seconds=float(env.get("WEB_REQUEST_READ_SECONDS", d.request_read_seconds)),
                session_hours=float(env.get("WEB_SESSION_HOURS", d.session_hours)),
                local_sign_in=_switch(env.get("WEB_LOCAL_SIGN_IN", "on"), "WEB_LOCAL_SIGN_IN"),
            )
        except ValueError as error:
            raise ConfigurationError(f"a WEB_* setting is not a number: {error}") from None
        if not 0 < settings.session_hours <= 24 * 30:
            raise ConfigurationError("WEB_SESSION_HOURS must be more than 0 and at most 720 (30 days)")
        return settings


def _switch(value: str, name: str) -> bool:
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigurationError(f"{name} must be on or off")


@dataclass(frozen=True, kw_only=True)
class PlatformSignInSettings:
    """How the platform that embeds us signs its sign-in tokens: one algorithm, one key, one issuer and audience."""

    algorithm: str
    issuer: str
    audience: str
    # HS256: the shared secret; EdDSA and RS256: the public key in PEM. Never printed.
    key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PlatformSignInSettings | None:
        """None when WEB_PLATFORM_JWT_ALGORITHM is unset: platform sign-in is off."""
        env = dict(os.environ if env is None else env)
        algorithm = env.get("WEB_PLATFORM_JWT_ALGORITHM", "")
        if not algorithm:
            return None
        if algorithm not in PLATFORM_ALGORITHMS:
            raise ConfigurationError(f"WEB_PLATFORM_JWT_ALGORITHM must be one of {', '.join(PLATFORM_ALGORITHMS)}")
        issuer, audience = env.get("WEB_PLATFORM_JWT_ISSUER", ""), env.get("WEB_PLATFORM_JWT_AUDIENCE", "")
        if not issuer or not audience:
            raise ConfigurationError("platform sign-in needs WEB_PLATFORM_JWT_ISSUER and WEB_PLATFORM_JWT_AUDIENCE")
        if algorithm == "HS256":
            key = _value_or_file(env, "WEB_PLATFORM_JWT_SECRET")
            if len(key) < MINIMUM_HS256_SECRET_LENGTH:
                raise ConfigurationError(
                    f"the HS256 secret (WEB_PLATFORM_JWT_SECRET) needs at least {MINIMUM_HS256_SECRET_LENGTH} characters"
                )
        else:
            key = _value_or_file(env, "WEB_PLATFORM_JWT_PUBLIC_KEY")
        return cls(algorithm=algorithm, issuer=issuer, audience=audience, key=key)


def _value_or_file(env: dict[str, str], name: str) -> str:
    """NAME itself, or the file NAME_FILE names (as SERVER_SECRET and SERVER_SECRET_FILE)."""
    value, path = env.get(name, ""), env.get(f"{name}_FILE", "")
    if value and path:
        raise ConfigurationError(f"both {name} and {name}_FILE are set; set only one")
    if path:
        try:
            return Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"{name}_FILE {path} cannot be read: {error}") from None
    if not value:
        raise ConfigurationError(f"platform sign-in needs {name} or {name}_FILE")
    return value
