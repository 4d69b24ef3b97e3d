"""Keys the edge derives from the server secret, one per purpose, and the URL-safe text they travel in."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derived_key(server_secret: str, purpose: str) -> bytes:
    """256 bits for one purpose: a key for sessions signs no link, and holding one yields no other."""
    info = f"team-members/web/{purpose}/v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(server_secret.encode())


_URL_SAFE = re.compile(r"[A-Za-z0-9_-]*")


def to_text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def from_text(text: str) -> bytes | None:
    """The bytes, or None when `text` is not unpadded URL-safe base64."""
    if not _URL_SAFE.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
