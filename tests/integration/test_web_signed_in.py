"""The signed-in paths of `/v1` (accepting an invitation, `/v1/me`) on real membership, with the
edge in-process and a session reader of the test's own (the sign-in itself is tested in test_web_signin.py).
Every request carries the session's CSRF token, as the pages' script does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import nats
import pytest
from litestar import Request

from services.web.app import create_app
from services.web.bus import PlatformBus
from services.web.callers import SignedInUser
from services.web.config import WebSettings
from services.web.edge import Edge
from shared.invitations import invitation_token
from teamctl.client import Client
from tests.services_under_test import ServiceUnderTest

CSRF = "csrf-of-the-test-session"


class SignedInAs:
    """Whoever the test says is signed in (None: nobody)."""

    def __init__(self) -> None:
        self.user: SignedInUser | None = None

    async def signed_in(self, request: Request[Any, Any, Any]) -> SignedInUser | None:
        return self.user


@pytest.fixture
async def signed_in(nc: nats.NATS) -> AsyncIterator[tuple[httpx.AsyncClient, SignedInAs]]:
    sessions = SignedInAs()
    edge = Edge(PlatformBus(nc, timeout=5.0), sessions, WebSettings(retry_after_seconds=7), "http://127.0.0.1")
    # On the test's own event loop, where its NATS connection lives.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(edge)), base_url="http://edge", headers={"X-CSRF-Token": CSRF}
    ) as http:
        yield http, sessions


async def invited(membership: ServiceUnderTest, nc: nats.NATS, email: str) -> tuple[str, str, str]:
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    sent = await client.command(
        "invite_member", org_id=org_id, actor={"type": "user", "id": "owner-1"}, email=email, role="admin"
    )
    invitation_id, expires_at = sent["result"]["invitation_id"], datetime.fromisoformat(sent["result"]["expires_at"])
    return org_id, invitation_id, invitation_token(membership.env["SERVER_SECRET"], invitation_id, expires_at)


async def test_the_signed_in_invitee_accepts_and_then_sees_the_organization_in_me(membership, nc, signed_in) -> None:
    http, sessions = signed_in
    org_id, invitation_id, token = await invited(membership, nc, "dev@example.com")

    nobody = await http.post(f"/v1/invitations/{invitation_id}/accept", json={"token": token})
    assert nobody.status_code == 401

    sessions.user = SignedInUser(user_id="dev-7", email="Dev@Example.com", csrf_token=CSRF)
    forged = await http.post(f"/v1/invitations/{invitation_id}/accept", json={"token": "forged"})
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_token")
    unknown = await http.post("/v1/invitations/inv_nobody/accept", json={"token": token})
    # An unknown invitation and a wrong token read alike: the route is no oracle for which ids exist.
    assert (unknown.status_code, unknown.json()["code"]) == (403, "invalid_token")
    assert unknown.json()["detail"] == forged.json()["detail"]

    accepted = await http.post(f"/v1/invitations/{invitation_id}/accept", json={"token": token})
    assert (accepted.status_code, accepted.json()) == (200, {"user_id": "dev-7", "role": "admin"})

    me = (await http.get("/v1/me")).json()
    assert me["principal"] == {"type": "user", "id": "dev-7"}
    assert me["user"] == {"user_id": "dev-7", "email": "Dev@Example.com"}
    assert [(o["org_id"], o["org_name"], o["role"]) for o in me["orgs"]] == [(org_id, "Acme", "admin")]
    assert "audit:read" in me["orgs"][0]["permissions"] and "billing:read" not in me["orgs"][0]["permissions"]
    members = await http.get(f"/v1/orgs/{org_id}/members")
    assert [m["user_id"] for m in members.json()["members"]] == ["owner-1", "dev-7"]


async def test_accepting_as_someone_whose_email_is_not_the_invitation_s_is_refused(membership, nc, signed_in) -> None:
    http, sessions = signed_in
    org_id, invitation_id, token = await invited(membership, nc, "dev@example.com")
    sessions.user = SignedInUser(user_id="mallory", email="mallory@example.com", csrf_token=CSRF)

    refused = await http.post(f"/v1/invitations/{invitation_id}/accept", json={"token": token})
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert refused.json()["details"]["reason"] == "email_mismatch"
    assert (await http.get(f"/v1/orgs/{org_id}/members")).status_code == 403  # not a member


async def test_a_service_that_does_not_answer_is_503_with_retry_after(membership, nc, signed_in) -> None:
    http, sessions = signed_in
    org_id, _, _ = await invited(membership, nc, "dev@example.com")
    sessions.user = SignedInUser(user_id="owner-1", email="o@acme.io")

    unanswered = await http.get(f"/v1/orgs/{org_id}/billing/charges")  # billing is not running
    assert unanswered.status_code == 503
    assert unanswered.headers["retry-after"] == "7"
    assert unanswered.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in unanswered.text


async def test_a_removed_member_s_session_reads_and_changes_nothing_in_the_organization(membership, nc, signed_in) -> None:
    http, sessions = signed_in
    org_id, invitation_id, token = await invited(membership, nc, "dev@example.com")
    sessions.user = SignedInUser(user_id="dev-7", email="dev@example.com", csrf_token=CSRF)
    assert (await http.post(f"/v1/invitations/{invitation_id}/accept", json={"token": token})).status_code == 200
    assert (await http.get(f"/v1/orgs/{org_id}/members")).status_code == 200

    removed = await Client(nc).command("remove_member", org_id=org_id, actor={"type": "user", "id": "owner-1"}, user_id="dev-7")
    assert removed["ok"], removed

    read = await http.get(f"/v1/orgs/{org_id}/members")
    assert (read.status_code, read.json()["code"], read.json()["details"]["reason"]) == (403, "permission_denied", "not_a_member")
    invite = await http.post(f"/v1/orgs/{org_id}/invitations", json={"email": "x@example.com", "role": "developer"})
    assert (invite.status_code, invite.json()["code"]) == (403, "permission_denied")
    assert (await http.get("/v1/me")).json()["orgs"] == []
