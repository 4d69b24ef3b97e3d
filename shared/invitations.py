"""Invitation tokens: an HMAC of the server secret over the invitation and its current expiry.

Membership checks them, the notifier puts them in the email; neither stores them. A resend moves
the expiry, so every older token stops matching.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from urllib.parse import quote

from .pricing import microseconds


def invitation_token(server_secret: str, invitation_id: str, expires_at: datetime) -> str:
    message = f"invitation\x1f{invitation_id}\x1f{microseconds(expires_at)}".encode()
    digest = hmac.new(server_secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(server_secret: str, token: str, invitation_id: str, expires_at: datetime) -> bool:
    expected = invitation_token(server_secret, invitation_id, expires_at)
    return hmac.compare_digest(token.encode(), expected.encode())


def accept_link(public_url: str, invitation_id: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/invitations/{quote(invitation_id)}/accept?token={quote(token)}"
