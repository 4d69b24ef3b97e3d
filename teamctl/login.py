"""`teamctl login`: a one-time sign-in link for the edge, signed with the server secret, valid five minutes.

It reads SERVER_SECRET (or SERVER_SECRET_FILE) and PUBLIC_URL as the services do; it needs no NATS.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from services.web.signin_links import local_sign_in_link
from shared.settings import ConfigurationError, Settings


def sign_in_link(user_id: str, email: str, next_path: str | None, env: dict[str, str] | None = None) -> str:
    """Raises ConfigurationError (no usable secret) or ValueError (an id, email or path the edge would refuse)."""
    settings = Settings.from_env(dict(os.environ if env is None else env))
    return local_sign_in_link(settings.server_secret, settings.public_url, user_id, email, datetime.now(UTC), next_path)


def login(user_id: str, email: str, next_path: str | None) -> int:
    try:
        link = sign_in_link(user_id, email, next_path)
    except (ConfigurationError, ValueError) as error:
        sys.stderr.write(f"teamctl login: {error}\n")
        return 2
    sys.stdout.write(link + "\n")
    return 0
