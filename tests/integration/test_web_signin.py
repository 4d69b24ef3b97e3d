"""Signing in to the edge: platform tokens, local links, sessions, sign-out and CSRF, over HTTP against
an edge on real NATS (its buckets) and a real membership service (for the calls a session makes)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from devstack import NatsServer, PostgresServer
from services.web.config import PlatformSignInSettings
from services.web.signin_links import local_sign_in_link
from shared.clock import FixedClock
from teamctl.client import Client
from tests.integration.signin_edge import RunningEdge, edge_in_process, edge_process
from tests.servers import fresh_server_secret, restart_if_down, unique_database_name
from tests.services_under_test import running_service

ISSUER, AUDIENCE = "https://platform.example", "team-members"
HS_SECRET = "a-shared-secret-of-the-platform-and-the-edge-0123456789"


@dataclass(frozen=True)
class Stack:
    nats_url: str
    server_secret: str


async def _delete_every_stream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            await js.delete_stream(stream.config.name)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stack(nats_server: NatsServer, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One membership service for the module: each test makes organizations of its own."""
    restart_if_down(nats_server)
    restart_if_down(postgres_server)
    asyncio.run(_delete_every_stream(nats_server.url))
    database = unique_database_name("web_signin")
    postgres_server.create_database(database)
    secret = fresh_server_secret()
    env = {"NATS_URL": nats_server.url, "DATABASE_URL": postgres_server.dsn(database), "SERVER_SECRET": secret}
    try:
        with running_service("membership", env, tmp_path_factory.mktemp("membership")):
            yield Stack(nats_server.url, secret)
    finally:
        postgres_server.drop_database(database)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def edge(stack: Stack, clock: FixedClock) -> AsyncIterator[RunningEdge]:
    platform = PlatformSignInSettings(algorithm="HS256", issuer=ISSUER, audience=AUDIENCE, key=HS_SECRET)
    async with edge_in_process(stack.nats_url, stack.server_secret, clock, platform) as running:
        yield running


ed25519_key = Ed25519PrivateKey.generate()
ED25519_PUBLIC_PEM = ed25519_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
async def eddsa_edge(stack: Stack, clock: FixedClock) -> AsyncIterator[RunningEdge]:
    platform = PlatformSignInSettings(algorithm="EdDSA", issuer=ISSUER, audience=AUDIENCE, key=ED25519_PUBLIC_PEM)
    async with edge_in_process(stack.nats_url, stack.server_secret, clock, platform) as running:
        yield running


rsa_key = generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
async def rs256_edge(stack: Stack, clock: FixedClock) -> AsyncIterator[RunningEdge]:
    platform = PlatformSignInSettings(algorithm="RS256", issuer=ISSUER, audience=AUDIENCE, key=RSA_PUBLIC_PEM)
    async with edge_in_process(stack.nats_url, stack.server_secret, clock, platform) as running:
        yield running


_counter = iter(range(1_000_000))


def someone() -> tuple[str, str]:
    n = next(_counter)
    return f"user-{n}-{datetime.now(UTC).timestamp():.0f}", f"user{n}@acme.example"


async def org_owned_by(stack: Stack, user_id: str, email: str) -> str:
    client = await Client.connect(stack.nats_url)
    try:
        reply = await client.command("create_organization", name="Acme", plan="pro", owner={"user_id": user_id, "email": email})
    finally:
        await client.close()
    assert reply["ok"], reply
    org_id: str = reply["result"]["org_id"]
    return org_id


def claims(clock: FixedClock, **overrides: Any) -> dict[str, Any]:
    user_id, email = someone()
    now = clock.now()
    base = {
        "sub": user_id,
        "email": email,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def hs256(payload: dict[str, Any], key: str = HS_SECRET) -> str:
    return jwt.encode(payload, key, algorithm="HS256")


def set_cookie_of(response: httpx.Response) -> str:
    return response.headers.get("set-cookie", "")


async def is_signed_in_as(client: httpx.AsyncClient, org_id: str) -> bool:
    """Reads the organization: 200 as its owner, 401 when not signed in."""
    response = await client.get(f"/v1/orgs/{org_id}")
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthenticated"
    assert "set-cookie" not in response.headers


# -- platform sign-in ---------------------------------------------------------------------


async def test_a_platform_token_signs_the_user_in_and_sends_them_to_next(
    edge: RunningEdge, stack: Stack, clock: FixedClock
) -> None:
    payload = claims(clock)
    org_id = await org_owned_by(stack, payload["sub"], payload["email"])
    async with httpx.AsyncClient(base_url=edge.url) as client:
        assert not await is_signed_in_as(client, org_id)
        response = await client.get("/session", params={"token": hs256(payload), "next": f"/orgs/{org_id}/settings/team"})
        assert response.status_code == 303
        assert response.headers["location"] == f"/orgs/{org_id}/settings/team"
        cookie = set_cookie_of(response)
        assert cookie.startswith("tm_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie
        assert (response.headers["cache-control"], response.headers["referrer-policy"]) == ("no-store", "no-referrer")
        assert await is_signed_in_as(client, org_id)


async def test_an_eddsa_token_signs_in_on_an_edge_configured_for_eddsa(
    eddsa_edge: RunningEdge, stack: Stack, clock: FixedClock
) -> None:
    payload = claims(clock)
    org_id = await org_owned_by(stack, payload["sub"], payload["email"])
    async with httpx.AsyncClient(base_url=eddsa_edge.url) as client:
        response = await client.get("/session", params={"token": jwt.encode(payload, ed25519_key, algorithm="EdDSA")})
        assert (response.status_code, response.headers["location"]) == (303, "/")
        assert await is_signed_in_as(client, org_id)


async def test_an_eddsa_edge_refuses_hs256_signed_with_its_public_key_and_any_other_key(
    eddsa_edge: RunningEdge, clock: FixedClock
) -> None:
    other = Ed25519PrivateKey.generate()
    async with httpx.AsyncClient(base_url=eddsa_edge.url) as client:
        for token in (
            hs256_by_hand(claims(clock), ED25519_PUBLIC_PEM.encode()),
            jwt.encode(claims(clock), other, algorithm="EdDSA"),
        ):
            refused(await client.get("/session", params={"token": token}))


async def test_an_rs256_token_signs_in_on_an_edge_configured_for_rs256_and_no_other_key_does(
    rs256_edge: RunningEdge, stack: Stack, clock: FixedClock
) -> None:
    payload = claims(clock)
    org_id = await org_owned_by(stack, payload["sub"], payload["email"])
    other = generate_private_key(public_exponent=65537, key_size=2048)
    async with httpx.AsyncClient(base_url=rs256_edge.url) as client:
        for token in (
            jwt.encode(claims(clock), other, algorithm="RS256"),
            hs256_by_hand(claims(clock), RSA_PUBLIC_PEM.encode()),
            jwt.encode({k: v for k, v in claims(clock).items() if k != "aud"}, rsa_key, algorithm="RS256"),
        ):
            refused(await client.get("/session", params={"token": token}))
        response = await client.get("/session", params={"token": jwt.encode(payload, rsa_key, algorithm="RS256")})
        assert (response.status_code, response.headers["location"]) == (303, "/")
        assert await is_signed_in_as(client, org_id)


def hs256_by_hand(payload: dict[str, Any], key: bytes) -> str:
    """HS256 keyed with the public key's PEM: the algorithm-confusion attack (pyjwt refuses to sign it itself)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(payload).encode())}"
    return f"{signing_input}.{part(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "expires too far ahead",
        "no exp",
        "wrong issuer",
        "no issuer",
        "wrong audience",
        "no audience",
        "wrong key",
        "alg none",
        "sub outside the id grammar",
        "no sub",
        "bad email",
        "not before in the future",
        "garbage",
        "no token",
    ],
)
async def test_a_platform_token_that_is_not_a_live_one_signs_no_one_in(edge: RunningEdge, clock: FixedClock, case: str) -> None:
    now = clock.now()
    token = {
        "expired": lambda: hs256(claims(clock, exp=int((now - timedelta(minutes=1)).timestamp()))),
        "expires too far ahead": lambda: hs256(claims(clock, exp=int((now + timedelta(minutes=12)).timestamp()))),
        "no exp": lambda: hs256({k: v for k, v in claims(clock).items() if k != "exp"}),
        "wrong issuer": lambda: hs256(claims(clock, iss="https://evil.example")),
        "no issuer": lambda: hs256({k: v for k, v in claims(clock).items() if k != "iss"}),
        "wrong audience": lambda: hs256(claims(clock, aud="someone-else")),
        "no audience": lambda: hs256({k: v for k, v in claims(clock).items() if k != "aud"}),
        "wrong key": lambda: hs256(claims(clock), key="another-secret-of-at-least-thirty-two-characters"),
        "alg none": lambda: jwt.encode(claims(clock), None, algorithm="none"),
        "sub outside the id grammar": lambda: hs256(claims(clock, sub="../admin")),
        "no sub": lambda: hs256({k: v for k, v in claims(clock).items() if k != "sub"}),
        "bad email": lambda: hs256(claims(clock, email="not an address")),
        "not before in the future": lambda: hs256(claims(clock, nbf=int((now + timedelta(minutes=3)).timestamp()))),
        "garbage": lambda: "a.b.c",
        "no token": lambda: "",
    }[case]()
    async with httpx.AsyncClient(base_url=edge.url) as client:
        refused(await client.get("/session", params={"token": token} if token else {}))


async def test_a_platform_token_signs_in_once(edge: RunningEdge, clock: FixedClock) -> None:
    token = hs256(claims(clock))
    async with httpx.AsyncClient(base_url=edge.url) as client:
        assert (await client.get("/session", params={"token": token})).status_code == 303
        refused(await client.get("/session", params={"token": token}))


async def test_a_browser_is_told_why_in_a_page(edge: RunningEdge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get("/session", params={"token": "<script>"}, headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "<script>" not in response.text and "Not signed in" in response.text


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "evil.example/path",
        "/%0d%0aSet-Cookie: x=1".replace("%0d%0a", "\r\n"),
    ],
)
async def test_next_never_leads_off_the_site(edge: RunningEdge, clock: FixedClock, next_path: str) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get("/session", params={"token": hs256(claims(clock)), "next": next_path})
    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_a_session_cookie_is_secure_and_host_only_when_the_public_url_is_https(stack: Stack, clock: FixedClock) -> None:
    async with edge_in_process(stack.nats_url, stack.server_secret, clock, public_url="https://team.example") as running:
        user_id, email = someone()
        link = local_sign_in_link(stack.server_secret, "https://team.example", user_id, email, clock.now())
        async with httpx.AsyncClient(base_url=running.url) as client:
            response = await client.get("/session/local", params={"token": _token_of(link)})
    cookie = set_cookie_of(response)
    assert cookie.startswith("__Host-tm_session=") and "Secure" in cookie and "HttpOnly" in cookie


# -- local sign-in links ------------------------------------------------------------------


def _token_of(link: str) -> str:
    return dict(part.split("=", 1) for part in urlsplit(link).query.split("&"))["token"]


async def test_a_local_link_signs_in_once_and_lands_on_next(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    link = local_sign_in_link(stack.server_secret, "http://localhost:8080", user_id, email, clock.now(), "/orgs/x/settings/team")
    assert link.startswith("http://localhost:8080/session/local?token=")
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get("/session/local", params={"token": _token_of(link)})
        assert (response.status_code, response.headers["location"]) == (303, "/orgs/x/settings/team")
        assert await is_signed_in_as(client, org_id)
    async with httpx.AsyncClient(base_url=edge.url) as another:
        again = await another.get("/session/local", params={"token": _token_of(link)})
        refused(again)
        assert "used" in again.json()["detail"]


async def test_a_local_link_expires_after_five_minutes(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    link = local_sign_in_link(stack.server_secret, "http://localhost:8080", user_id, email, clock.now())
    clock.advance(minutes=5)
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get("/session/local", params={"token": _token_of(link)})
    refused(response)
    assert "expired" in response.json()["detail"]


async def test_a_local_link_signed_with_another_secret_or_altered_is_refused(edge: RunningEdge, clock: FixedClock) -> None:
    user_id, email = someone()
    foreign = _token_of(local_sign_in_link(fresh_server_secret(), "http://x", user_id, email, clock.now()))
    payload, signature = _token_of(local_sign_in_link(edge.signin.server_secret, "http://x", user_id, email, clock.now())).split(
        "."
    )
    altered = f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    async with httpx.AsyncClient(base_url=edge.url) as client:
        for token in (foreign, altered):
            refused(await client.get("/session/local", params={"token": token}))


# -- sessions ------------------------------------------------------------------------------


@asynccontextmanager
async def signed_in_client(
    edge: RunningEdge, stack: Stack, clock: FixedClock, user_id: str, email: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        link = local_sign_in_link(stack.server_secret, "http://x", user_id, email, clock.now())
        assert (await client.get("/session/local", params={"token": _token_of(link)})).status_code == 303
        yield client


async def test_a_session_ends_when_its_lifetime_does(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    async with signed_in_client(edge, stack, clock, user_id, email) as client:
        clock.advance(hours=11, minutes=59)
        assert await is_signed_in_as(client, org_id)
        clock.advance(minutes=1)
        assert not await is_signed_in_as(client, org_id)


async def test_a_tampered_or_malformed_cookie_is_not_signed_in(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    async with signed_in_client(edge, stack, clock, user_id, email) as client:
        value = client.cookies["tm_session"]
    flipped = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    for cookie in (flipped, value[:-4], value + "AAAA", "", "%%%", "x" * 5000, "é", "+" + value[1:]):
        async with httpx.AsyncClient(base_url=edge.url, headers={"Cookie": f"tm_session={cookie}".encode()}) as client:
            response = await client.get(f"/v1/orgs/{org_id}")
            assert response.status_code == 401, (cookie, response.text)


async def test_each_sign_in_is_a_new_session(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    async with (
        signed_in_client(edge, stack, clock, user_id, email) as first,
        signed_in_client(edge, stack, clock, user_id, email) as second,
    ):
        assert first.cookies["tm_session"] != second.cookies["tm_session"]
        assert (await first.get("/session/csrf-token")).json() != (await second.get("/session/csrf-token")).json()


# -- CSRF ----------------------------------------------------------------------------------


async def test_a_session_callers_change_needs_the_csrf_token_of_its_own_session(
    edge: RunningEdge, stack: Stack, clock: FixedClock
) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    invitation = {"email": "dev@acme.example", "role": "developer"}
    async with (
        signed_in_client(edge, stack, clock, user_id, email) as client,
        signed_in_client(edge, stack, clock, user_id, email) as other_session,
    ):
        token = (await client.get("/session/csrf-token")).json()["csrf_token"]
        foreign = (await other_session.get("/session/csrf-token")).json()["csrf_token"]

        missing = await client.post(f"/v1/orgs/{org_id}/invitations", json=invitation)
        assert (missing.status_code, missing.json()["details"]["reason"]) == (403, "csrf_token_missing")
        for wrong in (foreign, token[:-1], "x"):
            mismatch = await client.post(f"/v1/orgs/{org_id}/invitations", json=invitation, headers={"X-CSRF-Token": wrong})
            assert (mismatch.status_code, mismatch.json()["details"]["reason"]) == (403, "csrf_token_mismatch")
        members = await client.get(f"/v1/orgs/{org_id}/members")
        assert members.status_code == 200  # reads need none

        created = await client.post(f"/v1/orgs/{org_id}/invitations", json=invitation, headers={"X-CSRF-Token": token})
        assert created.status_code == 201, created.text
        assert "invitation_id" in created.json()


async def test_csrf_token_endpoint_needs_a_session(edge: RunningEdge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        refused(await client.get("/session/csrf-token"))


# -- sign-out --------------------------------------------------------------------------------


async def test_sign_out_needs_the_csrf_token_and_a_form_may_carry_it(edge: RunningEdge, stack: Stack, clock: FixedClock) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    async with signed_in_client(edge, stack, clock, user_id, email) as client:
        token = (await client.get("/session/csrf-token")).json()["csrf_token"]
        assert (await client.post("/session/sign-out")).status_code == 403
        assert (await client.post("/session/sign-out", data={"csrf_token": "nope"})).status_code == 403
        assert await is_signed_in_as(client, org_id)
        cookie = client.cookies["tm_session"]

        out = await client.post("/session/sign-out", data={"csrf_token": token}, headers={"Accept": "text/html"})
        assert (out.status_code, out.headers["location"]) == (303, "/")
        assert "Max-Age=0" in set_cookie_of(out)
    async with httpx.AsyncClient(base_url=edge.url, cookies={"tm_session": cookie}) as replay:
        assert not await is_signed_in_as(replay, org_id)


async def test_sign_out_on_one_edge_process_holds_on_another(stack: Stack, tmp_path: Path) -> None:
    user_id, email = someone()
    org_id = await org_owned_by(stack, user_id, email)
    env = {"NATS_URL": stack.nats_url, "SERVER_SECRET": stack.server_secret, "PUBLIC_URL": "http://localhost:8080"}
    with edge_process(env, tmp_path / "a.log") as edge_a, edge_process(env, tmp_path / "b.log") as edge_b:
        link = local_sign_in_link(stack.server_secret, "http://x", user_id, email, datetime.now(UTC))
        async with httpx.AsyncClient(base_url=edge_a) as on_a:
            assert (await on_a.get("/session/local", params={"token": _token_of(link)})).status_code == 303
            cookie = on_a.cookies["tm_session"]
            async with httpx.AsyncClient(base_url=edge_b, cookies={"tm_session": cookie}) as on_b:
                assert await is_signed_in_as(on_b, org_id)
                refused(await on_b.get("/session/local", params={"token": _token_of(link)}))  # used, on A

                token = (await on_b.get("/session/csrf-token")).json()["csrf_token"]
                assert (await on_a.post("/session/sign-out", headers={"X-CSRF-Token": token})).status_code == 204

                assert not await is_signed_in_as(on_b, org_id)
        async with httpx.AsyncClient(base_url=edge_a, cookies={"tm_session": cookie}) as back_on_a:
            assert not await is_signed_in_as(back_on_a, org_id)
