"""Custom roles and project scopes over `/v1`, against the edge running as a process on the real stack:
a role defined, assigned, narrowed (its holder's key loses the permission at once, through `/v1` and
`authorize`), refused deletion and plan change while held, deleted; a key scoped to one project."""

from __future__ import annotations

from typing import Any

from tests.integration.test_web_api import invite, join, problem_of
from tests.integration.web_edge import EdgeStack, Org

BILLING_VIEWER = {
    "role_key": "billing-viewer",
    "name": "Billing viewer",
    "description": "reads charges and invoices",
    "permissions": ["billing:read", "members:read", "org:read"],
}


def authorized(stack: EdgeStack, **asked: Any) -> dict[str, Any]:
    """`membership.query.authorize` over the bus, as a gateway asks it."""
    reply = stack.bus("membership.authorize", **{k: v for k, v in asked.items() if v is not None})
    assert reply["ok"], reply
    return dict(reply["result"])


def roles_of(http: Any, org: Org) -> list[dict[str, Any]]:
    page = http.get(f"/v1/orgs/{org.org_id}/roles", headers=org.as_owner)
    assert page.status_code == 200, page.text
    return list(page.json()["roles"])


def test_a_custom_role_is_defined_assigned_narrowed_refused_deletion_while_held_then_deleted(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org(plan="enterprise")
    base = f"/v1/orgs/{org.org_id}/roles"
    with edge_stack.client() as http:
        assert roles_of(http, org) == []
        defined = http.post(base, json=BILLING_VIEWER, headers=org.as_owner)
        assert (defined.status_code, defined.json()) == (
            201,
            {"role_key": "billing-viewer", "permissions": ["billing:read", "members:read", "org:read"]},
        )
        assert roles_of(http, org) == [BILLING_VIEWER]
        problem_of(http.post(base, json=BILLING_VIEWER, headers=org.as_owner), 409, "conflict")
        reserved = http.post(base, json={**BILLING_VIEWER, "role_key": "x", "permissions": ["org:manage"]}, headers=org.as_owner)
        problem_of(reserved, 422, "validation_error")
        problem_of(http.post(base, json={**BILLING_VIEWER, "role_key": "admin"}, headers=org.as_owner), 422, "validation_error")

        join(edge_stack, http, org, "bea", role="developer")
        assigned = http.patch(f"/v1/orgs/{org.org_id}/members/bea", json={"role": "billing-viewer"}, headers=org.as_owner)
        assert assigned.status_code == 200, assigned.text
        assert assigned.json()["role"] == "billing-viewer"
        undefined = http.patch(f"/v1/orgs/{org.org_id}/members/bea", json={"role": "auditor"}, headers=org.as_owner)
        assert problem_of(undefined, 422, "validation_error")["details"]["field"] == "role"
        members = http.get(f"/v1/orgs/{org.org_id}/members", headers=org.as_owner).json()["members"]
        assert {m["user_id"]: (m["role"], m["projects"]) for m in members}["bea"] == ("billing-viewer", None)

        bea_key = {
            "Authorization": f"Bearer {edge_stack.new_key(org.org_id, ['billing:read', 'members:read'], owner_user_id='bea')}"
        }
        assert http.get(f"/v1/orgs/{org.org_id}/billing/charges", headers=bea_key).status_code == 200

        narrowed = http.patch(f"{base}/billing-viewer", json={"permissions": ["members:read", "org:read"]}, headers=org.as_owner)
        assert (narrowed.status_code, narrowed.json()) == (
            200,
            {"role_key": "billing-viewer", "permissions": ["members:read", "org:read"]},
        )
        assert roles_of(http, org)[0]["name"] == "Billing viewer"  # what was absent stayed
        problem_of(http.get(f"/v1/orgs/{org.org_id}/billing/charges", headers=bea_key), 403, "permission_denied")
        asked = authorized(edge_stack, org_id=org.org_id, user_id="bea", permission="billing:read")
        assert asked["allowed"] is False and asked["role"] == "billing-viewer"

        held = problem_of(http.delete(f"{base}/billing-viewer", headers=org.as_owner), 409, "conflict")
        assert held["details"]["members"] == ["bea"] and held["details"]["roles"] == ["billing-viewer"]
        downgrade = http.put(f"/v1/orgs/{org.org_id}/plan", json={"plan": "pro"}, headers=org.as_owner)
        assert problem_of(downgrade, 409, "conflict")["details"]["members"] == ["bea"]

        back = http.patch(f"/v1/orgs/{org.org_id}/members/bea", json={"role": "developer"}, headers=org.as_owner)
        assert back.status_code == 200, back.text
        deleted = http.delete(f"{base}/billing-viewer", headers=org.as_owner)
        assert (deleted.status_code, deleted.json()) == (200, {"role_key": "billing-viewer"})
        assert roles_of(http, org) == []
        problem_of(http.delete(f"{base}/billing-viewer", headers=org.as_owner), 404, "not_found")


def test_custom_roles_need_enterprise_and_org_manage_and_bad_keys_are_refused(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org(plan="pro")
    base = f"/v1/orgs/{org.org_id}/roles"
    with edge_stack.client() as http:
        refused = problem_of(http.post(base, json=BILLING_VIEWER, headers=org.as_owner), 402, "plan_required")
        assert refused["details"]["required_plan"] == "enterprise"
        reader = {"Authorization": f"Bearer {edge_stack.new_key(org.org_id, ['org:read'], owner_user_id=org.owner_id)}"}
        problem_of(http.get(base, headers=reader), 403, "permission_denied")
        problem_of(http.patch(f"{base}/Not_A_Key", json={"name": "x"}, headers=org.as_owner), 422, "validation_error")
        problem_of(http.post(base, json={**BILLING_VIEWER, "extra": 1}, headers=org.as_owner), 422, "validation_error")
        problem_of(http.post(base, json=BILLING_VIEWER, headers=reader), 403, "permission_denied")


def test_a_key_scoped_to_one_project_and_scoped_invitations_and_members(edge_stack: EdgeStack) -> None:
    org = edge_stack.new_org()
    with edge_stack.client() as http:
        made = http.post(
            f"/v1/orgs/{org.org_id}/api-keys",
            json={"name": "ci", "permissions": ["gateway:use", "org:read"], "projects": ["ci"]},
            headers=org.as_owner,
        )
        assert made.status_code == 201, made.text
        assert made.json()["projects"] == ["ci"]
        secret = made.json()["secret"]
        listed = http.get(f"/v1/orgs/{org.org_id}/api-keys", headers=org.as_owner).json()["api_keys"]
        assert {k["key_id"]: k["projects"] for k in listed}[made.json()["key_id"]] == ["ci"]
        for project, allowed in (("ci", True), ("web", False), (None, False)):
            asked = authorized(edge_stack, api_key=secret, permission="gateway:use", project_id=project)
            assert asked["allowed"] is allowed, (project, asked)
        twice = {"name": "x", "permissions": ["org:read"], "projects": ["ci", "ci"]}
        problem_of(http.post(f"/v1/orgs/{org.org_id}/api-keys", json=twice, headers=org.as_owner), 422, "validation_error")
        bad_id = {"name": "x", "permissions": ["org:read"], "projects": ["no spaces"]}
        problem_of(http.post(f"/v1/orgs/{org.org_id}/api-keys", json=bad_id, headers=org.as_owner), 422, "validation_error")

        sent = invite(http, org, "scoped@example.com", projects=["web"])
        assert sent.status_code == 201, sent.text
        pending = http.get(f"/v1/orgs/{org.org_id}/invitations", headers=org.as_owner).json()["invitations"]
        assert [i["projects"] for i in pending] == [["web"]]

        join(edge_stack, http, org, "cy")
        member = f"/v1/orgs/{org.org_id}/members/cy"
        scoped = http.patch(member, json={"role": "developer", "projects": ["api", "web"]}, headers=org.as_owner)
        assert (scoped.status_code, scoped.json()["projects"]) == (200, ["api", "web"])
        both = http.patch(member, json={"role": "developer", "projects": ["api"], "every_project": True}, headers=org.as_owner)
        problem_of(both, 422, "validation_error")
        problem_of(
            http.patch(member, json={"role": "developer", "projects": None}, headers=org.as_owner), 422, "validation_error"
        )
        widened = http.patch(member, json={"role": "developer", "every_project": True}, headers=org.as_owner)
        assert (widened.status_code, widened.json()["projects"]) == (200, None)
