"""The sign-in parsers on hostile input: a cookie, a link or a token either signs someone in or is
"not signed in" (None, SignInRefused); never any other exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.web.config import PlatformSignInSettings
from services.web.identity import SignInRefused, safe_next_path
from services.web.platform_tokens import PlatformTokens
from services.web.sessions import SessionClaims, SessionCookie
from services.web.signin_links import local_sign_in_link, read_local_sign_in

SECRET = "s" * 48
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
HS_KEY = "k" * 40
tokens = PlatformTokens(PlatformSignInSettings(algorithm="HS256", issuer="iss", audience="aud", key=HS_KEY))
cookie = SessionCookie(SECRET)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
claim_sets = st.dictionaries(
    st.sampled_from(["sub", "email", "iss", "aud", "exp", "nbf", "iat", "jti"]) | st.text(max_size=6), json_values, max_size=8
)


def part(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@FUZZ
@given(st.text(max_size=2000))
def test_any_cookie_text_opens_to_claims_or_none(text: str) -> None:
    assert cookie.open(text) is None


@FUZZ
@given(st.binary(max_size=600))
def test_any_cookie_bytes_open_to_none(data: bytes) -> None:
    assert cookie.open(part(data)) is None


def test_a_sealed_cookie_opens_to_its_claims_and_only_under_its_secret() -> None:
    claims = SessionClaims(session_id="ab" * 16, user_id="u1", email="me@acme.io", issued=1, expires=2)
    sealed = cookie.seal(claims)
    assert cookie.open(sealed) == claims
    assert SessionCookie("t" * 48).open(sealed) is None


@FUZZ
@given(st.text(max_size=3000))
def test_any_local_link_token_is_refused(token: str) -> None:
    try:
        read_local_sign_in(SECRET, token, NOW)
    except SignInRefused:
        return
    raise AssertionError("an unsigned token signed someone in")


@FUZZ
@given(st.text(max_size=5000))
def test_any_text_as_a_platform_token_is_refused(token: str) -> None:
    try:
        tokens.verify(token, NOW)
    except SignInRefused:
        return
    raise AssertionError("text signed someone in")


VALID = {"sub": "u1", "email": "me@acme.io", "iss": "iss", "aud": "aud", "exp": int(NOW.timestamp()) + 60}


@FUZZ
@given(claim_sets, st.dictionaries(st.text(max_size=6), json_values, max_size=4))
@example(VALID, {})
@example({**VALID, "exp": float("inf")}, {"typ": "JWT"})
@example({**VALID, "aud": ["other", "aud"], "nbf": "soon"}, {})
@example({**VALID, "sub": ["u1"]}, {"kid": 1})
def test_any_claims_signed_with_the_right_key_sign_in_a_valid_identity_or_are_refused(
    claims: dict[str, Any], extra_header: dict[str, Any]
) -> None:
    """Signed with the platform's key, the claims themselves are hostile: wrong types, NaN-free floats, nesting."""
    header = {**extra_header, "alg": "HS256"}
    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    token = f"{signing_input}.{part(hmac.new(HS_KEY.encode(), signing_input.encode(), hashlib.sha256).digest())}"
    try:
        identity = tokens.verify(token, NOW)
    except SignInRefused:
        return
    assert (claims["iss"] == "iss" and claims["aud"] in ("aud", ["aud"])) or "aud" in claims["aud"]
    assert NOW.timestamp() - 30 < claims["exp"] <= (NOW + timedelta(minutes=10, seconds=30)).timestamp()
    assert identity.user_id == claims["sub"]


@FUZZ
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), claim_sets)
def test_any_header_and_claims_with_a_forged_signature_are_refused(header: dict[str, Any], claims: dict[str, Any]) -> None:
    token = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}.{part(b'forged')}"
    try:
        tokens.verify(token, NOW)
    except SignInRefused:
        return
    raise AssertionError("a forged token signed someone in")


@FUZZ
@given(st.text(max_size=300))
def test_a_safe_next_path_stays_on_the_site(raw: str) -> None:
    path = safe_next_path(raw)
    if path is not None:
        parts = urlsplit(path)
        assert path.startswith("/") and not path.startswith("//") and "\\" not in path
        assert parts.scheme == "" and parts.netloc == ""


@FUZZ
@given(st.text(max_size=80), st.text(max_size=80))
def test_a_link_is_made_only_for_what_the_edge_accepts(user_id: str, email: str) -> None:
    try:
        link = local_sign_in_link(SECRET, "http://localhost:8080", user_id, email, NOW)
    except ValueError:
        return
    token = link.split("token=", 1)[1]
    read = read_local_sign_in(SECRET, token, NOW)
    assert read.user_id == user_id


def test_a_link_reads_back_until_it_expires() -> None:
    link = local_sign_in_link(SECRET, "http://h", "u1", "Me@Acme.io", NOW, "/orgs/a/settings/team")
    token = link.split("token=", 1)[1]
    read = read_local_sign_in(SECRET, token, NOW + timedelta(minutes=4, seconds=59))
    assert (read.user_id, read.email, read.next_path) == ("u1", "me@acme.io", "/orgs/a/settings/team")
    try:
        read_local_sign_in(SECRET, token, NOW + timedelta(minutes=5))
    except SignInRefused:
        pass
    else:
        raise AssertionError("an expired link signed someone in")
