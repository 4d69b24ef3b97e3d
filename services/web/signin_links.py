"""Local sign-in links (`teamctl login`, `make run`): one-time, five minutes, signed with the server secret.

A link carries its own id, the user, their email, its expiry and where to go next, under an HMAC of a
key derived from the server secret. The edge records each id it accepts in a bucket, so a second use
is refused. Tests import `local_sign_in_link` to sign in a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import msgspec

from .identity import SignInRefused, identity_of, safe_next_path
from .keys import derived_key, from_text, to_text

LINK_LIFETIME = timedelta(minutes=5)
LOCAL_SIGN_IN_PATH = "/session/local"
MAX_TOKEN_LENGTH = 2048
_PURPOSE = "local-sign-in"


class LocalSignIn(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    link_id: str
    user_id: str
    email: str
    expires: int  # seconds since the epoch
    next_path: str | None = None


_decoder = msgspec.msgpack.Decoder(LocalSignIn)


def local_sign_in_link(
    server_secret: str, public_url: str, user_id: str, email: str, now: datetime, next_path: str | None = None
) -> str:
    """`<public_url>/session/local?token=…`; raises ValueError for an id, email or next path the edge would refuse."""
    try:
        identity = identity_of(user_id, email)
    except SignInRefused as refused:
        raise ValueError(str(refused)) from None
    if next_path is not None and safe_next_path(next_path) is None:
        raise ValueError("the next path must be a path on this site, such as /orgs/acme/settings/team")
    link = LocalSignIn(
        link_id=secrets.token_hex(16),
        user_id=identity.user_id,
        email=identity.email,
        expires=int((now + LINK_LIFETIME).timestamp()),
        next_path=next_path,
    )
    payload = msgspec.msgpack.encode(link)
    token = f"{to_text(payload)}.{to_text(_signature(server_secret, payload))}"
    return f"{public_url.rstrip('/')}{LOCAL_SIGN_IN_PATH}?token={token}"


def read_local_sign_in(server_secret: str, token: str, now: datetime) -> LocalSignIn:
    """The link behind a token this edge's secret signed and that has not expired; else SignInRefused."""
    encoded_payload, _, encoded_signature = token.partition(".") if len(token) <= MAX_TOKEN_LENGTH else ("", "", "")
    payload, signature = from_text(encoded_payload), from_text(encoded_signature)
    if not payload or signature is None or not hmac.compare_digest(signature, _signature(server_secret, payload)):
        raise SignInRefused("this sign-in link is not valid; ask for a new one")
    try:
        link = _decoder.decode(payload)
    except msgspec.DecodeError:
        raise SignInRefused("this sign-in link is not valid; ask for a new one") from None
    if now.timestamp() >= link.expires:
        raise SignInRefused("this sign-in link has expired; ask for a new one")
    return link


def _signature(server_secret: str, payload: bytes) -> bytes:
    return hmac.new(derived_key(server_secret, _PURPOSE), payload, hashlib.sha256).digest()
