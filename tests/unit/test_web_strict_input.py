"""The edge's input read strictly, in-process over a stand-in bus: bodies and query numbers as the
bus reads them, no 500 for a malformed body, Idempotency-Key scoped to its caller, and no /schema site."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from litestar.testing import TestClient

from services.web.app import create_app
from services.web.callers import NoSessions
from services.web.config import WebSettings
from services.web.edge import Edge

pytestmark = pytest.mark.unit

KEYS = {"key-acme-1": ("acme", "key_1"), "key-acme-2": ("acme", "key_2"), "key-other": ("other", "key_3")}
EVERY = ["members:read", "members:invite", "members:manage", "billing:manage", "api_keys:manage", "org:manage"]


class StandInBus:
    """Answers `authorize` for three keys and records the commands it is sent."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "authorize" and fields.get("api_key") in KEYS:
            org_id, key_id = KEYS[fields["api_key"]]
            return {"org_id": org_id, "principal": {"type": "api_key", "id": key_id}, "role": None, "permissions": EVERY}
        if name == "authorize":
            return {"org_id": None, "principal": None, "role": None, "permissions": []}
        return {"members": [], "invitations": [], "api_keys": [], "next_cursor": None}

    async def command(self, name: str, org_id: str, actor: Any, command_id: str, correlation_id: Any, /, **fields: Any) -> Any:
        self.commands.append({"name": name, "org_id": org_id, "actor": actor, "command_id": command_id, **fields})
        return {"invitation_id": "inv_1", "email": "a@b.io", "role": "developer", "expires_at": "2025-12-18T10:00:00Z"}


def client(bus: StandInBus) -> TestClient:
    return TestClient(create_app(Edge(bus, NoSessions(), WebSettings(), "http://localhost:8080")))  # type: ignore[arg-type]


def as_key(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json", **headers}


@pytest.mark.parametrize(
    "path",
    ["/schema", "/schema/", "/schema/swagger", "/schema/redoc", "/schema/openapi.json", "/schema/elements", "/schema/rapidoc"],
)
def test_only_openapi_json_documents_the_api_no_documentation_site_is_served(path):
    with client(StandInBus()) as c:
        answer = c.get(path)
        document = c.get("/openapi.json")
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "not_found"
    assert document.status_code == 200 and "/v1/orgs/{org_id}/invitations" in document.json()["paths"]


BODY_ROUTES = [
    ("POST", "/v1/orgs/acme/invitations"),
    ("PATCH", "/v1/orgs/acme/members/u_1"),
    ("POST", "/v1/orgs/acme/seats"),
    ("POST", "/v1/orgs/acme/seats/release"),
    ("POST", "/v1/orgs/acme/api-keys"),
    ("PUT", "/v1/orgs/acme/plan"),
    ("POST", "/v1/invitations/inv_1/accept"),
]
MALFORMED = {
    "invalid UTF-8 in a string": b'{"email":"\xff@x.io","role":"developer","token":"\xfe"}',
    "nested too deeply": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "an array nested too deeply": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("what", MALFORMED)
def test_a_malformed_body_is_a_validation_error_with_no_traceback_logged(method, path, what, caplog):
    bus = StandInBus()
    with caplog.at_level(logging.DEBUG), client(bus) as c:
        answer = c.request(method, path, content=MALFORMED[what], headers=as_key("key-acme-1"))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json" and answer.json()["code"] == "validation_error"
    assert bus.commands == []
    assert not any(record.exc_info for record in caplog.records)
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/orgs/acme/seats", {"quantity": "1", "accept_charge_cents": 1000}),
        ("POST", "/v1/orgs/acme/seats", {"quantity": 1, "accept_charge_cents": "1000"}),
        ("POST", "/v1/orgs/acme/seats", {"quantity": 1.0, "accept_charge_cents": 1000}),
        ("POST", "/v1/orgs/acme/seats", {"quantity": True, "accept_charge_cents": 1000}),
        ("POST", "/v1/orgs/acme/seats/release", {"quantity": "2"}),
        ("POST", "/v1/orgs/acme/invitations", {"email": "a@b.io", "role": "developer", "accept_charge_cents": "516"}),
        ("POST", "/v1/orgs/acme/api-keys", {"name": 5, "permissions": ["org:read"]}),
        ("POST", "/v1/orgs/acme/api-keys", {"name": "ci", "permissions": "org:read"}),
    ],
)
def test_a_body_field_of_the_wrong_type_is_refused_not_coerced(method, path, body):
    bus = StandInBus()
    with client(bus) as c:
        answer = c.request(method, path, json=body, headers=as_key("key-acme-1"))
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error", answer.text
    assert bus.commands == []


@pytest.mark.parametrize("limit", ["1e3", "1.0", "+5", " 5", "0x10", "５", ""])
def test_an_integer_query_parameter_must_be_written_in_digits(limit):
    with client(StandInBus()) as c:
        answer = c.get("/v1/orgs/acme/members", params={"limit": limit}, headers=as_key("key-acme-1"))
        fine = c.get("/v1/orgs/acme/members", params={"limit": "5"}, headers=as_key("key-acme-1"))
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error", answer.text
    assert fine.status_code == 200, fine.text


def test_a_well_typed_body_is_sent_on_as_decoded():
    bus = StandInBus()
    with client(bus) as c:
        answer = c.post("/v1/orgs/acme/invitations", json={"email": "a@b.io", "role": "developer"}, headers=as_key("key-acme-1"))
    assert answer.status_code == 201, answer.text
    assert [(sent["name"], sent["email"], sent["role"]) for sent in bus.commands] == [("invite_member", "a@b.io", "developer")]


def test_an_idempotency_key_names_one_command_per_caller_and_organization():
    bus = StandInBus()
    body = {"email": "a@b.io", "role": "developer"}
    with client(bus) as c:
        for secret, org in [("key-acme-1", "acme"), ("key-acme-1", "acme"), ("key-acme-2", "acme"), ("key-other", "other")]:
            sent = c.post(f"/v1/orgs/{org}/invitations", json=body, headers=as_key(secret, **{"Idempotency-Key": "invite-1"}))
            assert sent.status_code == 201, sent.text
        c.post("/v1/orgs/acme/invitations", json=body, headers=as_key("key-acme-1"))
    retry, same_retry, other_actor, other_org, no_key = (sent["command_id"] for sent in bus.commands)
    assert retry == same_retry  # the same caller retrying is the same command
    assert len({retry, other_actor, other_org, no_key}) == 4  # nobody else ever meets it
    assert "invite-1" not in retry
    assert all(command_id.startswith("web_") and len(command_id) <= 128 for command_id in (retry, other_actor, other_org))


@pytest.mark.parametrize("query", ["limit=1&limit=1000", "limit=5&limit=5", "cursor=a&cursor=b"])
def test_a_query_parameter_given_twice_is_refused_not_resolved(query):
    with client(StandInBus()) as c:
        answer = c.get(f"/v1/orgs/acme/members?{query}", headers=as_key("key-acme-1"))
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error", answer.text
    assert answer.json()["details"]["repeated"] == [query.split("=")[0]]
