"""API key secrets (and, through shared.invitations, invitation tokens), derived with HMAC from the server secret.

Neither is stored: a token is recomputed to check it, a key secret is kept only as its
SHA-256 hash. Derivation makes a repeated `create_api_key` reply carry the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from shared import invitations

from .domain.organization import NewApiKey

KEY_SCHEME = "tmk"


class Secrets:
    def __init__(self, server_secret: str) -> None:
        self._server_secret = server_secret
        self._key = server_secret.encode()

    def _mac(self, *parts: str) -> str:
        digest = hmac.new(self._key, "\x1f".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def invitation_token(self, invitation_id: str, expires_at: datetime) -> str:
        return invitations.invitation_token(self._server_secret, invitation_id, expires_at)

    def token_matches(self, token: str, invitation_id: str, expires_at: datetime) -> bool:
        return invitations.token_matches(self._server_secret, token, invitation_id, expires_at)

    def api_key_secret(self, org_id: str, key_id: str) -> str:
        return f"{KEY_SCHEME}_{org_id}.{key_id}.{self._mac('api-key', org_id, key_id)}"

    def new_api_key(self, org_id: str, key_id: str) -> NewApiKey:
        secret = self.api_key_secret(org_id, key_id)
        return NewApiKey(key_id=key_id, prefix=secret_prefix(secret), secret_hash=hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_prefix(secret: str) -> str:
    """The part shown in listings: everything but the last 39 characters of the MAC."""
    return secret[: len(secret) - 39]


def parse_api_key(secret: str) -> tuple[str, str] | None:
    """(org_id, key_id) named by a key secret, or None when it is not one of ours."""
    scheme, _, rest = secret.partition("_")
    parts = rest.split(".")
    if scheme != KEY_SCHEME or len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1]


def secrets_match(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(presented).encode(), stored_hash.encode())
