"""Sessions: a sealed cookie, so the edge keeps no state; sign-out is remembered in NATS.

The cookie holds a fresh random session id, the user's id and email, when it was issued and when it
expires, sealed with AES-256-GCM under a key derived from the server secret: a changed byte, another
secret or an expired session reads as "not signed in", never as an error. A signed-out id stays in a
bucket for a session's lifetime, and a cookie naming it is refused by every edge.
The CSRF token is an HMAC of the session id: bound to this session, worthless for any other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from litestar import Request
from litestar.datastructures import Cookie

from shared.clock import Clock

from .buckets import TtlBucket
from .callers import SignedInUser
from .identity import Identity
from .keys import derived_key, from_text, to_text

COOKIE_NAME = "tm_session"
# Over https the `__Host-` prefix makes browsers insist on Secure, Path=/ and no Domain.
SECURE_COOKIE_NAME = "__Host-tm_session"
MAX_COOKIE_LENGTH = 1024
_NONCE_BYTES = 12
_CONTEXT = b"team-members/web/session"


class SessionClaims(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    session_id: str
    user_id: str
    email: str
    issued: int  # seconds since the epoch
    expires: int


_decoder = msgspec.msgpack.Decoder(SessionClaims)


class SessionCookie:
    """Seals claims into a cookie value and opens one; None for anything this secret did not seal."""

    def __init__(self, server_secret: str) -> None:
        self._aead = AESGCM(derived_key(server_secret, "session"))

    def seal(self, claims: SessionClaims) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        return to_text(nonce + self._aead.encrypt(nonce, msgspec.msgpack.encode(claims), _CONTEXT))

    def open(self, value: str) -> SessionClaims | None:
        sealed = from_text(value) if len(value) <= MAX_COOKIE_LENGTH else None
        if sealed is None or len(sealed) <= _NONCE_BYTES:
            return None
        try:
            return _decoder.decode(self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _CONTEXT))
        except (InvalidTag, msgspec.DecodeError):
            return None


class Sessions:
    """The edge's `SessionReader`: who the cookie says, unless it expired or was signed out."""

    def __init__(self, server_secret: str, lifetime: timedelta, secure: bool, signed_out: TtlBucket, clock: Clock) -> None:
        self._cookie = SessionCookie(server_secret)
        self._csrf_key = derived_key(server_secret, "csrf")
        self.lifetime = lifetime
        self.secure = secure
        self.cookie_name = SECURE_COOKIE_NAME if secure else COOKIE_NAME
        self._signed_out = signed_out
        self._clock = clock

    def begin(self, identity: Identity) -> Cookie:
        """A new session (a new id at every sign-in) as the cookie that carries it."""
        now = int(self._clock.now().timestamp())
        claims = SessionClaims(
            session_id=secrets.token_hex(16),
            user_id=identity.user_id,
            email=identity.email,
            issued=now,
            expires=now + int(self.lifetime.total_seconds()),
        )
        return self._cookie_of(self._cookie.seal(claims), int(self.lifetime.total_seconds()))

    def ended(self) -> Cookie:
        """The cookie that makes the browser forget its session."""
        return self._cookie_of("", 0)

    async def signed_in(self, request: Request) -> SignedInUser | None:
        value = request.cookies.get(self.cookie_name)
        claims = self.read(value) if value else None
        if claims is None or await self._signed_out.holds(claims.session_id):
            return None
        return SignedInUser(
            user_id=claims.user_id,
            email=claims.email,
            session_id=claims.session_id,
            csrf_token=self.csrf_token(claims.session_id),
        )

    def read(self, value: str) -> SessionClaims | None:
        """The claims of a cookie value this edge sealed and that has not expired; no look-up in NATS."""
        claims = self._cookie.open(value)
        if claims is None or self._clock.now().timestamp() >= claims.expires:
            return None
        return claims

    async def end(self, user: SignedInUser) -> None:
        """Signs the session out on every edge, for good."""
        await self._signed_out.record(user.session_id)

    def csrf_token(self, session_id: str) -> str:
        return to_text(hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).digest())

    def _cookie_of(self, value: str, max_age: int) -> Cookie:
        return Cookie(
            key=self.cookie_name,
            value=value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )


def is_https(public_url: str) -> bool:
    return public_url.lower().startswith("https://")
