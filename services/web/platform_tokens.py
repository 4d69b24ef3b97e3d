"""Platform sign-in tokens: short-lived JWTs the embedding platform signs, naming `sub` and `email`.

Only the one configured algorithm is accepted, with a key of the matching kind (an HS256 secret is
never read as a public key, nor a PEM as a secret), so neither `none` nor algorithm confusion gets
through. `exp`, `iss` and `aud` are required; `exp` may lie at most ten minutes ahead. Time is the
edge's clock, not the library's, so tests can move it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.settings import ConfigurationError

from .config import PlatformSignInSettings
from .identity import Identity, SignInRefused, identity_of

MAX_AHEAD = timedelta(minutes=10)
CLOCK_SKEW = timedelta(seconds=30)
MAX_TOKEN_LENGTH = 4096
MINIMUM_RSA_BITS = 2048
_NOT_VALID = "the platform's sign-in token is not valid; sign in again from the platform"


class PlatformTokens:
    def __init__(self, settings: PlatformSignInSettings) -> None:
        self.settings = settings
        self._key = _verification_key(settings)
        self._jwt = jwt.PyJWT(options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})

    def verify(self, token: str, now: datetime) -> Identity:
        """The identity the token names; SignInRefused for any token that is not a live one of the platform's."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise SignInRefused(_NOT_VALID)
        try:
            if jwt.get_unverified_header(token).get("alg") != self.settings.algorithm:
                raise SignInRefused(_NOT_VALID)
            claims = self._jwt.decode(
                token,
                self._key,
                algorithms=[self.settings.algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iss", "aud", "sub", "email"], "verify_signature": True},
            )
        except jwt.PyJWTError:
            raise SignInRefused(_NOT_VALID) from None
        _check_times(claims, now)
        return identity_of(claims["sub"], claims["email"])


def token_digest(token: str) -> str:
    """What the used-sign-ins bucket keeps of a token: a second use of the same token is refused."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_times(claims: dict[str, Any], now: datetime) -> None:
    expires = _instant(claims.get("exp"))
    if expires is None or expires <= now.timestamp() - CLOCK_SKEW.total_seconds():
        raise SignInRefused("the platform's sign-in token has expired; sign in again from the platform")
    if expires > (now + MAX_AHEAD + CLOCK_SKEW).timestamp():
        raise SignInRefused("the platform's sign-in token lives too long (at most ten minutes)")
    for claim in ("nbf", "iat"):
        if claim in claims:
            moment = _instant(claims[claim])
            if moment is None or moment > (now + CLOCK_SKEW).timestamp():
                raise SignInRefused(_NOT_VALID)


def _instant(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        return None
    return float(value)


def _verification_key(settings: PlatformSignInSettings) -> Any:
    if settings.algorithm == "HS256":
        if "-----BEGIN" in settings.key:
            raise ConfigurationError("the HS256 secret looks like a PEM key; give the platform's shared secret")
        return settings.key.encode()
    try:
        key = load_pem_public_key(settings.key.encode())
    except (ValueError, TypeError):
        raise ConfigurationError(f"the {settings.algorithm} public key is not a PEM public key") from None
    if settings.algorithm == "EdDSA" and not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("EdDSA needs an Ed25519 public key")
    if settings.algorithm == "RS256" and not (isinstance(key, RSAPublicKey) and key.key_size >= MINIMUM_RSA_BITS):
        raise ConfigurationError(f"RS256 needs an RSA public key of at least {MINIMUM_RSA_BITS} bits")
    return key
