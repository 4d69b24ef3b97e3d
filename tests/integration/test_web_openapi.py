"""The edge's OpenAPI document: valid OpenAPI, complete, and true of the live edge (schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

# Loaded now, at collection, not inside the module fixture while the edge's servers run: pytest rewrites
# schemathesis's modules (a plugin), and Python 3.11.7's AST constructor once failed there in CI with
# "AST constructor recursion depth mismatch", a CPython 3.11 bug seen once.
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from tests.integration.web_edge import EdgeStack, Org

CONTRACT_OPERATIONS = {
    "get_organization", "members", "change_role", "remove_member", "invitations", "invite_member",
    "resend_invitation", "revoke_invitation", "accept_invitation", "seat_quote", "add_seats", "remove_seats",
    "api_keys", "create_api_key", "revoke_api_key", "change_plan", "charges", "upcoming_invoice",
    "search", "verify", "export", "me",
    "roles", "define_role", "update_role", "delete_role",
}  # fmt: skip


@pytest.fixture(scope="module")
def document(edge_stack: EdgeStack) -> dict[str, Any]:
    with edge_stack.client() as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    return dict(answer.json())


@pytest.fixture(scope="module")
def fuzzed_org(edge_stack: EdgeStack) -> Org:
    return edge_stack.new_org(name="Fuzz", owner_id="fuzz-owner")


def test_the_document_is_valid_openapi_and_names_every_operation_after_the_contract(document: dict[str, Any]) -> None:
    validate(document)
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    assert operations.keys() == CONTRACT_OPERATIONS
    for name, operation in operations.items():
        problems = {s: r for s, r in operation["responses"].items() if s != "200" and s != "201"}
        assert {"401", "422", "503"} <= problems.keys(), name
        for response in problems.values():
            assert list(response["content"]) == ["application/problem+json"], name
        assert "Retry-After" in problems["503"]["headers"]
    org_id = document["paths"]["/v1/orgs/{org_id}"]["get"]["parameters"][0]
    assert org_id["schema"]["pattern"] == "^(?:[A-Za-z0-9_-]{1,64})(?![\\s\\S])"
    assert operations["invite_member"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NewInvitation"
    }
    assert document["components"]["schemas"]["NewInvitation"]["additionalProperties"] is False
    role_key = document["paths"]["/v1/orgs/{org_id}/roles/{role_key}"]["delete"]["parameters"]
    assert {p["name"]: p["schema"]["pattern"] for p in role_key}["role_key"] == "^(?:[a-z0-9][a-z0-9-]{0,62})(?![\\s\\S])"
    project_ids = document["components"]["schemas"]["NewApiKey"]["properties"]["projects"]["oneOf"][0]["items"]
    assert project_ids["pattern"] == org_id["schema"]["pattern"]
    assert operations["create_api_key"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiKeyCreated"
    }


# "A schema-valid request is accepted" does not hold for this API, by design: a well-formed request
# can still be refused by the rules (402 a seat must be bought, 409, 410) or carry an opaque cursor
# the service never gave out (422). Every other check runs: no 5xx, documented statuses, content
# types, headers and bodies, and invalid data rejected.
SCHEMA_VALID_BUT_REFUSED = schemathesis.checks.positive_data_acceptance


@pytest.fixture(scope="module")
def live_schema(edge_stack: EdgeStack) -> Any:
    return schemathesis.openapi.from_url(f"{edge_stack.base_url}/openapi.json")


# schemathesis's own pytest loader (`from_fixture`) needs a pytest older than ours: the operations
# are parametrized here by name, and each is driven with hypothesis from the live document.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("operation_id", sorted(CONTRACT_OPERATIONS))
def test_the_live_edge_answers_as_its_document_says(
    live_schema: Any, fuzzed_org: Org, operation_id: str, mode: GenerationMode
) -> None:
    operation = next(op.ok() for op in live_schema.get_all_operations() if op.ok().definition.raw["operationId"] == operation_id)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def answers_as_documented(case: Any) -> None:
        if "org_id" in (case.path_parameters or {}):
            case.path_parameters["org_id"] = fuzzed_org.org_id  # a real organization, reachable with the key
        case.call_and_validate(headers=fuzzed_org.as_owner, excluded_checks=[SCHEMA_VALID_BUT_REFUSED])

    answers_as_documented()
