"""Platform sign-in settings: an edge with a key of the wrong kind, or half a configuration, does not start."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.web.config import PlatformSignInSettings, WebSettings
from services.web.platform_tokens import PlatformTokens
from shared.settings import ConfigurationError

BASE = {"WEB_PLATFORM_JWT_ISSUER": "https://platform.example", "WEB_PLATFORM_JWT_AUDIENCE": "team-members"}
ED25519_PEM = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
SMALL_RSA_PEM = (
    generate_private_key(65537, 1024).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
)


def test_without_an_algorithm_platform_sign_in_is_off() -> None:
    assert PlatformSignInSettings.from_env({}) is None


def test_a_public_key_is_read_from_its_file(tmp_path: Path) -> None:
    pem = tmp_path / "platform.pem"
    pem.write_text(ED25519_PEM)
    env = {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "EdDSA", "WEB_PLATFORM_JWT_PUBLIC_KEY_FILE": str(pem)}
    settings = PlatformSignInSettings.from_env(env)
    assert settings is not None and PlatformTokens(settings).settings.algorithm == "EdDSA"
    assert ED25519_PEM not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "none", "WEB_PLATFORM_JWT_SECRET": "x" * 40},
        {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "HS512", "WEB_PLATFORM_JWT_SECRET": "x" * 40},
        {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "HS256", "WEB_PLATFORM_JWT_SECRET": "short"},
        {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "HS256"},
        {"WEB_PLATFORM_JWT_ALGORITHM": "HS256", "WEB_PLATFORM_JWT_SECRET": "x" * 40},
        {**BASE, "WEB_PLATFORM_JWT_ALGORITHM": "EdDSA", "WEB_PLATFORM_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"},
    ],
)
def test_half_a_configuration_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        PlatformSignInSettings.from_env(env)


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("HS256", ED25519_PEM),  # a public key as the HMAC secret: the algorithm-confusion set-up
        ("EdDSA", "not a pem at all"),
        ("RS256", ED25519_PEM),
        ("RS256", SMALL_RSA_PEM),
        ("EdDSA", SMALL_RSA_PEM),
    ],
)
def test_a_key_of_the_wrong_kind_is_refused(algorithm: str, key: str) -> None:
    settings = PlatformSignInSettings(algorithm=algorithm, issuer="i", audience="a", key=key)
    with pytest.raises(ConfigurationError):
        PlatformTokens(settings)


@pytest.mark.parametrize("hours", ["0", "-1", "721", "twelve"])
def test_a_session_lifetime_out_of_range_is_refused(hours: str) -> None:
    with pytest.raises(ConfigurationError):
        WebSettings.from_env({"WEB_SESSION_HOURS": hours})


def test_sessions_last_twelve_hours_unless_told() -> None:
    assert WebSettings.from_env({}).session_hours == 12
    assert WebSettings.from_env({"WEB_SESSION_HOURS": "1.5"}).session_hours == 1.5
