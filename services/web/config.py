"""The edge's own settings, from environment variables (the shared ones come from `shared.settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.settings import ConfigurationError


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # How long the edge waits for a service's reply before it answers 503 with Retry-After.
    bus_timeout_seconds: float = 5.0
    retry_after_seconds: int = 2
    max_body_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebSettings:
        env = dict(os.environ if env is None else env)
        d = cls()
        try:
            return cls(
                host=env.get("WEB_HOST", d.host),
                port=int(env.get("WEB_PORT", d.port)),
                bus_timeout_seconds=float(env.get("WEB_BUS_TIMEOUT_SECONDS", d.bus_timeout_seconds)),
                retry_after_seconds=int(env.get("WEB_RETRY_AFTER_SECONDS", d.retry_after_seconds)),
                max_body_bytes=int(env.get("WEB_MAX_BODY_BYTES", d.max_body_bytes)),
            )
        except ValueError as error:
            raise ConfigurationError(f"a WEB_* setting is not a number: {error}") from None
