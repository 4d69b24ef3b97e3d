"""What every page holds, in-process over a stand-in bus: its security headers, hostile values
rendered inert, the HTML error page for an unexpected failure, and the home page at `/`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_web_pages import StandInBus, client

pytestmark = pytest.mark.unit

PAYLOAD = '"><script>alert(1)</script><img src=x onerror=alert(2)>{{7*7}}'
INERT = "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;{{7*7}}"


def assert_inert(html: str) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html and "onerror=alert(2)>" not in html
    assert "49" not in html.replace("2025", "")  # no template was evaluated from data


class HostileBus(StandInBus):
    """Membership and audit answering with attacker-chosen names, emails and fields."""

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        answer = (
            await super().query(service, name, **fields)
            if name in {"authorize", "get_organization", "invitation", "invitations"}
            else None
        )
        if name == "get_organization":
            answer["name"] = PAYLOAD
            answer["members"][1]["email"] = f"{PAYLOAD}@engines.io"
            answer["invitations"][0]["email"] = f"{PAYLOAD}@kat.io"
        if name == "invitations":
            answer["invitations"][0]["email"] = f"{PAYLOAD}@kat.io"
        if name == "invitation":
            answer.update(org_name=PAYLOAD, email=f"{PAYLOAD}@kat.io")
        if name == "api_keys":
            key = {
                "key_id": "key_1",
                "name": PAYLOAD,
                "prefix": "tmk_ab",
                "owner_user_id": "ada",
                "permissions": ["org:read"],
                "expires_at": None,
                "created_at": "2025-12-01T10:00:00Z",
                "created_by": {"type": "user", "id": "ada"},
                "status": "live",
            }
            answer = {"api_keys": [key], "next_cursor": None}
        if name == "search":
            actor = {"type": "user", "id": PAYLOAD}
            entry = {"seq": 1, "occurred_at": "2025-12-01T10:00:00Z", "action": PAYLOAD, "actor": actor, "targets": [actor]}
            answer = {"entries": [entry], "next_cursor": None}
        if name == "verify":
            answer = {"ok": True, "entries_checked": 0}
        if name == "user_orgs":
            answer = {
                "orgs": [{"org_id": "org_1", "org_name": PAYLOAD, "joined_at": "2025-12-01T10:00:00Z"}],
                "next_cursor": None,
            }
        return answer


PAGES = ["/", "/orgs/org_1/settings/team", "/orgs/org_1/settings/api-keys", "/orgs/org_1/settings/audit"]


@pytest.mark.parametrize("path", [*PAGES, "/invitations/inv_1/accept?token=good", "/orgs/not an id!/settings/team"])
def test_every_page_forbids_framing_sniffing_foreign_scripts_and_caching(path):
    with client(HostileBus(), who="ada") as c:
        page = c.get(path)
    assert page.headers["content-type"].startswith("text/html"), page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", PAGES)
def test_names_and_emails_from_the_services_are_rendered_inert(path):
    with client(HostileBus(), who="ada") as c:
        page = c.get(path)
    assert page.status_code == 200, page.text
    assert_inert(page.text)
    assert INERT in page.text


def test_the_invitation_page_renders_its_organization_and_email_inert():
    for who in (None, "kat", "alan"):
        with client(HostileBus(), who=who) as c:
            page = c.get("/invitations/inv_1/accept", params={"token": "good"})
        assert page.status_code == 200
        assert_inert(page.text)


def test_audit_filters_are_echoed_into_the_form_inert():
    filters = {"action": PAYLOAD, "actor_id": PAYLOAD, "target_id": PAYLOAD, "from": PAYLOAD, "to": PAYLOAD}
    with client(HostileBus(), who="ada") as c:
        page = c.get("/orgs/org_1/settings/audit", params=filters)
    assert page.status_code == 200
    assert_inert(page.text)
    assert page.text.count(f'value="{INERT}"') == 5


class FailingBus(StandInBus):
    """A service answering with something the page cannot read: an unexpected failure, not a refusal."""

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "get_organization":
            raise RuntimeError("the page's bus broke")
        return await super().query(service, name, **fields)


def test_an_unexpected_failure_on_a_page_is_the_html_error_page():
    with client(FailingBus(), who="ada") as c:
        page = c.get("/orgs/org_1/settings/team")
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in page.text and "the page's bus broke" not in page.text
    assert page.headers["x-content-type-options"] == "nosniff"


def test_home_lists_the_signed_in_user_s_organizations_with_links_to_their_team():
    with client(HostileBus(), who="ada") as c:
        page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/orgs/org_1/settings/team"' in page.text
    assert "Signed in as <strong>ada@engines.io</strong>" in page.text


def test_home_without_a_session_says_how_to_sign_in():
    with client() as c:
        page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "teamctl login" in page.text and "--next '/'" in page.text


class ManyOrgsBus(HostileBus):
    async def query(self, service: str, name: str, **fields: Any) -> Any:
        answer = await super().query(service, name, **fields)
        if name == "user_orgs":
            answer["next_cursor"] = "cur_2"
        return answer


def test_home_says_when_the_user_is_in_more_organizations_than_it_shows():
    with client(HostileBus(), who="ada") as c:
        few = c.get("/").text
    with client(ManyOrgsBus(), who="ada") as c:
        many = c.get("/").text
    assert "You are in more organizations" not in few
    assert "You are in more organizations: these are the first 100" in many
