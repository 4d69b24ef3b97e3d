"""API key secrets, invitation tokens and sealed replies.

A key secret is 256 bits from the operating system's CSPRNG, shown once in the reply to
`create_api_key`; the store keeps only its SHA-256 (a hash of a random 256-bit value needs no
slow KDF). Nothing derives a key from configuration: holding `SERVER_SECRET` computes no key.

`SERVER_SECRET` signs invitation tokens (through `shared.invitations`) and seals the one reply
that carries a key secret for the idempotency window (`ReplySeal`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared import invitations

from .domain.organization import NewApiKey

KEY_SCHEME = "tmk"
SECRET_BYTES = 32
_NONCE_BYTES = 12


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly minted key: what the store keeps, and the secret the caller gets once."""

    stored: NewApiKey
    secret: str


class Secrets:
    def __init__(self, server_secret: str) -> None:
        self._server_secret = server_secret
        self.seal = ReplySeal(server_secret)

    def invitation_token(self, invitation_id: str, expires_at: datetime) -> str:
        return invitations.invitation_token(self._server_secret, invitation_id, expires_at)

    def token_matches(self, token: str, invitation_id: str, expires_at: datetime) -> bool:
        return invitations.token_matches(self._server_secret, token, invitation_id, expires_at)

    @staticmethod
    def issue_api_key(org_id: str, key_id: str) -> IssuedApiKey:
        secret = f"{KEY_SCHEME}_{org_id}.{key_id}.{secrets.token_urlsafe(SECRET_BYTES)}"
        return IssuedApiKey(NewApiKey(key_id=key_id, prefix=secret_prefix(secret), secret_hash=hash_secret(secret)), secret)


class ReplySeal:
    """Authenticated encryption (AES-256-GCM) under a key derived from the server secret.

    The context (org and command id) is bound as associated data, so a sealed reply cannot be
    moved to another record. Rotating the server secret makes every sealed reply unreadable."""

    def __init__(self, server_secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"team-members/sealed-reply/v1").derive(
            server_secret.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes | None:
        """The plaintext, or None when it was sealed under another secret or altered."""
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context)
        except (InvalidTag, ValueError):
            return None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_prefix(secret: str) -> str:
    """The part shown in listings: the scheme and the ids, and the first four characters of the random part."""
    return secret[: secret.rindex(".") + 5]


@dataclass(frozen=True)
class KeyName:
    """The organization and key a presented secret names (not yet checked against the stored hash)."""

    org_id: str
    key_id: str


def parse_api_key(secret: str) -> KeyName | None:
    """What a key secret names, or None when it is not one of ours."""
    scheme, _, rest = secret.partition("_")
    parts = rest.split(".")
    if scheme != KEY_SCHEME or len(parts) != 3 or not all(parts):
        return None
    return KeyName(parts[0], parts[1])


def secrets_match(presented: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(presented).encode(), stored_hash.encode())
