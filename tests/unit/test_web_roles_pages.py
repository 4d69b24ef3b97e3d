"""The Roles page, custom roles in the Team page's pickers and the API keys page's project scope,
rendered in-process over a stand-in bus (an enterprise organization with one custom role)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from tests.unit.test_web_pages import StandInBus, client

pytestmark = pytest.mark.unit

BILLING_VIEWER = {
    "role_key": "billing-viewer",
    "name": "Billing <viewer>",
    "description": "reads invoices",
    "permissions": ["billing:read", "members:read", "org:read"],
}
AUDITOR = {"role_key": "auditor", "name": "Auditor", "description": "", "permissions": ["audit:read", "members:read"]}


class EnterpriseBus(StandInBus):
    """`org_1` on the enterprise plan, with two custom roles; bea holds one of them."""

    def __init__(self, plan: str = "enterprise") -> None:
        super().__init__()
        self.plan = plan
        self.asked: list[str] = []

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        self.asked.append(name)
        if name == "roles":
            assert self.plan == "enterprise", "a page asked for custom roles on another plan"
            return {"roles": [AUDITOR, BILLING_VIEWER], "next_cursor": None}
        if name == "api_keys":
            key = {
                "key_id": "key_1",
                "name": "ci",
                "prefix": "tm_abc",
                "owner_user_id": "ada",
                "permissions": ["gateway:use"],
                "expires_at": None,
                "created_at": "2025-12-01T10:00:00Z",
                "created_by": {"type": "user", "id": "ada"},
                "status": "live",
            }
            return {"api_keys": [{**key, "projects": ["ci"]}, {**key, "key_id": "key_2", "projects": None}], "next_cursor": None}
        answer = await super().query(service, name, **fields)
        if name == "get_organization":
            answer = {**answer, "plan": self.plan}
            answer["members"] = [*answer["members"], {**answer["members"][1], "user_id": "bea", "role": "billing-viewer"}]
        return answer


def test_the_owner_s_pickers_offer_the_custom_roles_by_name_and_holders_show_it():
    with client(EnterpriseBus(), who="ada") as c:
        html = c.get("/orgs/org_1/settings/team").text
    assert '<option value="billing-viewer">Billing &lt;viewer&gt;</option>' in html  # the dialog's picker, escaped
    assert '<option value="billing-viewer" selected>Billing &lt;viewer&gt;</option>' in html  # bea's select
    assert '<option value="auditor">Auditor</option>' in html


def test_an_admin_is_not_offered_a_role_holding_what_they_lack():
    with client(EnterpriseBus(), who="grace") as c:
        html = c.get("/orgs/org_1/settings/team").text
    assert 'value="auditor"' in html  # audit:read and members:read: an admin holds both
    assert '<option value="billing-viewer">' not in html  # billing:read: an admin lacks it
    # bea's role is beyond grace: her row says it, by its name, and offers no change
    assert '<span class="role role-billing-viewer">Billing &lt;viewer&gt;</span>' in html


def test_a_pro_team_page_never_asks_for_custom_roles():
    bus = EnterpriseBus(plan="pro")
    with client(bus, who="ada") as c:
        assert c.get("/orgs/org_1/settings/team").status_code == 200
    assert "roles" not in bus.asked


def test_the_roles_page_lists_defines_and_edits_with_a_checklist_without_the_reserved_permissions():
    with client(EnterpriseBus(), who="ada") as c:
        page = c.get("/orgs/org_1/settings/roles")
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'self'")
    html = page.text
    assert '<a href="/orgs/org_1/settings/roles" aria-current="page">Roles</a>' in html
    assert '<script src="/static/roles.js" defer></script>' in html
    assert 'data-role-action="delete"' in html and 'data-role="billing-viewer"' in html
    assert 'id="define-role-form"' in html and 'name="role_key"' in html
    assert 'value="billing:read" checked' in html  # the edit form starts from the role's permissions
    assert 'value="billing:manage"' in html and 'value="gateway:use"' in html
    assert 'value="owners:manage"' not in html and 'value="org:manage"' not in html
    assert "Billing &lt;viewer&gt;" in html and "<viewer>" not in html


def test_the_roles_page_is_for_org_managers_only_and_says_what_a_pro_plan_lacks():
    for who in ("grace", "alan"):
        with client(EnterpriseBus(), who=who) as c:
            assert c.get("/orgs/org_1/settings/roles").status_code == 403
            assert "/settings/roles" not in c.get("/orgs/org_1/settings/team").text
    bus = EnterpriseBus(plan="pro")
    with client(bus, who="ada") as c:
        html = c.get("/orgs/org_1/settings/roles").text
    assert "Custom roles need the Enterprise plan" in html and "define-role-form" not in html
    assert "roles" not in bus.asked


def test_the_api_keys_page_offers_a_project_scope_and_shows_each_key_s():
    with client(EnterpriseBus(), who="ada") as c:
        html = c.get("/orgs/org_1/settings/api-keys").text
        script = c.get("/static/roles.js")
    assert 'id="key-projects" name="projects"' in html
    assert "<td><code>ci</code></td>" in html and "<td>every project</td>" in html
    assert script.status_code == 200


PEOPLE_MANAGER = ["members:invite", "members:manage", "members:read", "org:read"]


class PeopleManagerBus(EnterpriseBus):
    """dora holds a custom role that may invite and manage members, and nothing else."""

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "authorize" and fields.get("user_id") == "dora":
            return {
                "allowed": fields["permission"] in PEOPLE_MANAGER,
                "org_id": "org_1",
                "principal": {"type": "user", "id": "dora"},
                "role": "people-manager",
                "permissions": PEOPLE_MANAGER,
            }
        answer = await super().query(service, name, **fields)
        if name == "roles":
            manager = {"role_key": "people-manager", "name": "People", "description": "", "permissions": PEOPLE_MANAGER}
            answer = {**answer, "roles": [*answer["roles"], manager]}
        if name == "get_organization":
            dora = {**answer["members"][1], "user_id": "dora", "email": "dora@engines.io", "role": "people-manager"}
            answer["members"] = [*answer["members"], dora]
        return answer


def test_a_custom_role_manager_is_offered_only_roles_and_members_within_their_permissions():
    with client(PeopleManagerBus(), who="dora") as c:
        html = c.get("/orgs/org_1/settings/team").text
    # admin and developer hold what dora lacks (gateway:use, ...): neither picker offers them
    assert '<option value="admin"' not in html and '<option value="developer"' not in html
    assert '<option value="owner"' not in html and 'value="auditor"' not in html
    assert '<option value="people-manager"' in html  # her own role: she holds all of it
    # bea (billing-viewer: billing:read, which dora lacks), alan (developer), ada (owner): no buttons
    for user in ("bea", "alan", "ada"):
        assert f'data-action="remove-member" data-org="org_1" data-user="{user}"' not in html
        assert f'data-action="change-role" data-select="role-1" data-org="org_1" data-user="{user}"' not in html
    assert 'data-action="change-role"' not in html and 'data-action="remove-member"' not in html


def test_an_admin_manages_a_developer_but_not_a_holder_of_a_role_beyond_them():
    with client(EnterpriseBus(), who="grace") as c:
        html = c.get("/orgs/org_1/settings/team").text
    assert 'data-action="remove-member" data-org="org_1" data-user="alan"' in html
    assert 'data-action="remove-member" data-org="org_1" data-user="bea"' not in html
    assert 'data-user="bea" data-email' not in html
    assert '<option value="admin"' in html and '<option value="developer"' in html
    assert '<option value="owner"' not in html


class ManyRolesBus(EnterpriseBus):
    """205 custom roles, answered 100 a page whatever the limit asked; alan holds the last one."""

    ROLES: ClassVar[list[dict[str, Any]]] = [
        {"role_key": f"zz-{n:03}", "name": f"Role number {n}", "description": "", "permissions": ["org:read"]} for n in range(205)
    ]

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "roles":
            start = int(fields.get("cursor") or 0)
            end = start + min(fields.get("limit", 100), 100)
            return {"roles": self.ROLES[start:end], "next_cursor": str(end) if end < len(self.ROLES) else None}
        answer = await super().query(service, name, **fields)
        if name == "get_organization":
            answer["members"] = [{**m, "role": "zz-204"} if m["user_id"] == "alan" else m for m in answer["members"]]
        return answer


def test_the_roles_page_and_the_pickers_page_through_every_role():
    with client(ManyRolesBus(), who="ada") as c:
        roles = c.get("/orgs/org_1/settings/roles").text
        team = c.get("/orgs/org_1/settings/team").text
    assert 'Custom roles <span class="count">205</span>' in roles
    assert 'data-role-key="zz-204"' in roles and "More roles" not in roles
    assert '<option value="zz-204">Role number 204</option>' in team  # the dialog offers the last one
    assert '<option value="zz-204" selected>Role number 204</option>' in team  # alan's select names it


def test_beyond_the_bound_the_roles_page_says_so_and_members_still_show_their_role_s_name(monkeypatch):
    from services.web.pages import roles as roles_page

    monkeypatch.setattr(roles_page, "ROLES_SHOWN", 150)
    with client(ManyRolesBus(), who="ada") as c:
        roles = c.get("/orgs/org_1/settings/roles").text
        team = c.get("/orgs/org_1/settings/team").text
    assert 'Custom roles <span class="count">205</span>' in roles  # the count is every role's
    assert 'data-role-key="zz-149"' in roles and 'data-role-key="zz-150"' not in roles
    assert "More roles: the first 150 are shown here" in roles and "/v1/orgs/org_1/roles" in roles
    # the Team page knows every role: alan's, beyond the ones the Roles page shows, by its name
    assert '<option value="zz-204" selected>Role number 204</option>' in team


class ScopedBus(EnterpriseBus):
    """grace (admin) is limited to projects p1 and p2; alan to ci; the invitation to kat to web."""

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        answer = await super().query(service, name, **fields)
        if name == "authorize" and fields.get("user_id") == "grace":
            answer = {**answer, "projects": ["p1", "p2"]}
        if name == "get_organization":
            answer["members"] = [{**m, "projects": ["ci"]} if m["user_id"] == "alan" else m for m in answer["members"]]
        if name == "invitations":
            answer = {**answer, "invitations": [{**i, "projects": ["web"]} for i in answer["invitations"]]}
        return answer


def test_the_team_page_shows_scopes_and_the_dialog_offers_one():
    with client(ScopedBus(), who="ada") as c:
        html = c.get("/orgs/org_1/settings/team").text
    assert '<th scope="col">Projects</th>' in html
    assert "<td><code>ci</code></td>" in html  # alan's scope
    assert "<td><code>web</code></td>" in html  # the invitation's
    assert "<td>every project</td>" in html  # ada's
    assert 'id="invite-projects" name="projects"' in html
    assert 'value=""' not in html.split('id="invite-projects"')[1].split(">")[0]  # ada, unscoped: left empty


def test_a_scoped_user_s_forms_start_from_their_own_scope_and_say_so():
    with client(ScopedBus(), who="grace") as c:
        team = c.get("/orgs/org_1/settings/team").text
        keys = c.get("/orgs/org_1/settings/api-keys").text
    assert 'id="invite-projects" name="projects" maxlength="2000" value="p1, p2"' in team
    assert "You reach only p1, p2" in team
    assert 'id="key-projects" name="projects" maxlength="2000" value="p1, p2"' in keys
    assert "You reach only p1, p2" in keys and "Empty: every project you reach" not in keys


def test_delete_role_is_documented_without_402_and_a_bad_role_key_is_explained_in_words():
    with client(EnterpriseBus(), who="ada") as c:
        document = c.get("/openapi.json").json()
        refused = c.post(
            "/v1/orgs/org_1/roles",
            json={"role_key": "Bad Key", "name": "x", "permissions": ["org:read"]},
            headers={"X-CSRF-Token": "csrf-for-ada"},
        )
    roles = document["paths"]["/v1/orgs/{org_id}/roles/{role_key}"]
    assert "402" not in roles["delete"]["responses"] and "402" in roles["patch"]["responses"]
    assert "402" in document["paths"]["/v1/orgs/{org_id}/roles"]["post"]["responses"]
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "regex" not in detail and "(?:" not in detail
    assert "lower-case letters, digits and dashes" in detail and "$.role_key" in detail
