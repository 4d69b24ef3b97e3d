"""The HTTP edge as a service of the stack: its health on HTTP and on the bus, request ids that become
the commands' correlation ids, 503 while membership is gone and back when it returns, bounded bodies.

Real processes throughout: NATS, PostgreSQL, membership and the edge, spoken to with httpx.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import nats
import pytest

from services.membership.domain.permissions import permissions_of
from shared.topology import SERVICES
from teamctl.client import Client
from tests.services_under_test import REPO, ServiceUnderTest, answers_health, running_service

pytestmark = pytest.mark.integration

OWNER = {"type": "user", "id": "owner-1"}
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Team:
    org_id: str
    api_key: str  # an owner-made key that may read members and invite

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def a_team(client: Client) -> Team:
    created = await client.command(
        "create_organization", name="Edge Co", plan="pro", owner={"user_id": "owner-1", "email": "owner@edge.example.com"}
    )
    assert created["ok"], created
    org_id = created["result"]["org_id"]
    await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=10, accept_charge_cents=10**7)
    key = await client.command(
        "create_api_key",
        org_id=org_id,
        actor=OWNER,
        name="edge tests",
        permissions=[*sorted(permissions_of("developer")), "members:invite"],  # inviting developers
    )
    assert key["ok"], key
    return Team(org_id, key["result"]["secret"])


@pytest.fixture
async def http(web: ServiceUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def team(nc: nats.NATS, web: ServiceUnderTest) -> Team:
    return await a_team(Client(nc, timeout=10))


async def invite(http: httpx.AsyncClient, team: Team, email: str, **headers: str) -> httpx.Response:
    return await http.post(
        f"/v1/orgs/{team.org_id}/invitations",
        json={"email": email, "role": "developer"},
        headers={**team.headers, **headers},
    )


async def stored_correlation_id(nc: nats.NATS, org_id: str, invitation_email: str) -> str | None:
    """The correlation_id of the MemberInvited event for that email, as the relay published it from the store."""
    js = nc.jetstream()
    subscription = await js.subscribe(f"membership.events.{org_id}.MemberInvited", ordered_consumer=True)
    try:
        while True:
            envelope = msgspec.json.decode((await subscription.next_msg(timeout=20)).data)
            if envelope["data"]["email"] == invitation_email:
                return envelope["correlation_id"]
    finally:
        await subscription.unsubscribe()


async def test_the_edge_answers_healthz_and_its_health_on_the_bus(web: ServiceUnderTest, http: httpx.AsyncClient, nc):
    response = await http.get("/healthz")

    assert response.status_code == 200
    assert response.json()["ok"] is True and response.json()["service"] == "web"
    assert response.headers["x-request-id"].startswith("req_")
    reply = msgspec.json.decode((await nc.request("web.query.health", b"{}", timeout=5)).data)
    assert reply["ok"] is True and reply["result"]["service"] == "web"
    malformed = msgspec.json.decode((await nc.request("web.query.health", b"{not json", timeout=5)).data)
    assert malformed["ok"] is False and malformed["error"]["code"] == "validation_error"


def test_teamctl_lists_the_edge_among_the_services(web: ServiceUnderTest) -> None:
    health = subprocess.run(
        [sys.executable, "-m", "teamctl.cli", "--nats-url", web.env["NATS_URL"], "health"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = dict(line.split(maxsplit=1) for line in health.stdout.splitlines())
    assert lines["web"] == "ok" and lines["membership"] == "ok"
    assert list(lines) == list(SERVICES)


async def test_a_request_id_becomes_the_correlation_id_of_the_command_it_sends(http, team, nc):
    given = "checkout-7f3a:retry.1"

    invited = await invite(http, team, "given@edge.example.com", **{"X-Request-ID": given})
    minted = await invite(http, team, "minted@edge.example.com")

    assert invited.status_code == 201, invited.text
    assert invited.headers["x-request-id"] == given
    assert await stored_correlation_id(nc, team.org_id, "given@edge.example.com") == given
    assert minted.status_code == 201, minted.text
    made = minted.headers["x-request-id"]
    assert made.startswith("req_")
    assert await stored_correlation_id(nc, team.org_id, "minted@edge.example.com") == made


@pytest.mark.parametrize(
    "malformed",
    ["two words", "x" * 129, "semi;colon", 'quote"d', "", "ünïcode".encode().decode("latin-1")],
    ids=["space", "too-long", "semicolon", "quote", "empty", "non-ascii"],
)
async def test_a_malformed_request_id_is_replaced_not_trusted(http, team, nc, malformed: str):
    email = f"replaced-{abs(hash(malformed))}@edge.example.com"

    invited = await http.post(
        f"/v1/orgs/{team.org_id}/invitations",
        json={"email": email, "role": "developer"},
        headers=[*team.headers.items(), ("X-Request-ID", malformed.encode("latin-1"))],
    )

    assert invited.status_code == 201, invited.text
    replaced = invited.headers["x-request-id"]
    assert replaced != malformed and replaced.startswith("req_")
    assert await stored_correlation_id(nc, team.org_id, email) == replaced


async def test_without_membership_a_command_gets_503_with_retry_after_and_the_edge_recovers(
    web: ServiceUnderTest, http: httpx.AsyncClient, team: Team, membership: ServiceUnderTest
):
    membership.kill()

    refused = await invite(http, team, "during@edge.example.com")
    listed = await http.get(f"/v1/orgs/{team.org_id}/members", headers=team.headers)
    health = await http.get("/healthz")

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith(PROBLEM)
    assert int(refused.headers["retry-after"]) >= 1
    problem = refused.json()
    assert problem["status"] == 503 and problem["code"] == "unavailable"
    assert {"type", "title", "detail"} <= problem.keys() and "Traceback" not in refused.text
    assert listed.status_code == 503 and "retry-after" in listed.headers
    assert health.status_code == 200
    assert web.popen is not None and web.popen.poll() is None

    membership.start()

    recovered = await invite(http, team, "after@edge.example.com")
    assert recovered.status_code == 201, recovered.text
    members = await http.get(f"/v1/orgs/{team.org_id}/members", headers=team.headers)
    assert members.status_code == 200, members.text


async def test_an_oversized_body_gets_413_problem_json_and_changes_nothing(web, http, team, nc):
    limit = int(web.env.get("WEB_MAX_BODY_BYTES", 64 * 1024))
    oversized = b'{"email": "big@edge.example.com", "role": "developer", "padding": "' + b"x" * (limit + 1) + b'"}'

    declared = await http.post(
        f"/v1/orgs/{team.org_id}/invitations", content=oversized, headers={**team.headers, "Content-Type": "application/json"}
    )

    async def chunks():
        for start in range(0, len(oversized), 8192):
            yield oversized[start : start + 8192]

    streamed = await http.post(  # no Content-Length: the edge counts as it reads
        f"/v1/orgs/{team.org_id}/invitations", content=chunks(), headers={**team.headers, "Content-Type": "application/json"}
    )

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["code"] == "payload_too_large" and response.json()["status"] == 413
    invitations = await Client(nc).query("membership", "invitations", org_id=team.org_id)
    assert [i for i in invitations["result"]["invitations"] if i["email"] == "big@edge.example.com"] == []
    assert answers_health(web.env["NATS_URL"], "web")


def test_the_edge_refuses_to_start_on_a_taken_port_and_says_which(service_env, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceUnderTest("web", {**service_env, "WEB_PORT": str(port)}, tmp_path).start(wait=False)
        assert service.popen is not None
        assert service.popen.wait(timeout=30) != 0
    assert f"127.0.0.1:{port}" in service.output() and "WEB_PORT" in service.output()
    assert "Traceback" not in service.output()


def _closed_by_the_edge(sock: socket.socket) -> bool:
    """Waits (up to the socket's timeout) for the edge to close the connection: EOF or a reset."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_silent_connections_and_half_sent_requests_are_closed_and_the_cap_holds(service_env, tmp_path, membership) -> None:
    """No request within WEB_REQUEST_READ_SECONDS closes the connection (silent, half a request line,
    a body shorter than its Content-Length); past WEB_MAX_CONNECTIONS a new one is closed at once,
    and the edge keeps answering once they are gone."""
    limits = {"WEB_REQUEST_READ_SECONDS": "1", "WEB_MAX_CONNECTIONS": "3"}
    with running_service("web", {**service_env, **limits}, tmp_path) as web:
        host, port = "127.0.0.1", int(web.env["WEB_PORT"])
        openings = [b"", b"GET /healthz HT", b"POST /v1/orgs/x/invitations HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{"]
        held = []
        for opening in openings:
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(opening)
            held.append(sock)
        over_the_cap = socket.create_connection((host, port), timeout=10)
        assert _closed_by_the_edge(over_the_cap)  # the fourth, at once
        over_the_cap.close()
        for sock in held:
            assert _closed_by_the_edge(sock)  # each within the read deadline, not at the socket's 10 s timeout
            sock.close()
        with httpx.Client(base_url=web.base_url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
