"""The pages, rendered in-process over a stand-in bus: what each role sees, and the HTML error pages.

The whole flow against the real stack is tests/e2e/test_team_page.py (Playwright)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import TestClient

from services.membership.domain.permissions import ROLE_PERMISSIONS
from services.web.app import create_app
from services.web.callers import SignedInUser
from services.web.config import WebSettings
from services.web.edge import Edge
from services.web.pages.rendering import dollars
from shared.errors import InvalidToken

pytestmark = pytest.mark.unit

ROLES = {"ada": "owner", "grace": "admin", "alan": "developer"}
QUOTE = {
    "seats_included": 3,
    "seats_purchased": 0,
    "seats_total": 3,
    "seats_used": 2,
    "seats_available": 1,
    "unit_price_cents": 1000,
    "next_seat_charge_cents": 516,
    "billing_period_start": "2025-11-27T00:00:00Z",
    "billing_period_end": "2025-12-27T00:00:00Z",
    "quoted_at": "2025-12-11T00:00:00Z",
}


class StandInBus:
    """Answers the queries the pages send, as membership would for one organization `org_1`."""

    def __init__(self, link_status: str = "pending") -> None:
        self.link_status = link_status

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "authorize":
            role = ROLES.get(fields["user_id"]) if fields["org_id"] == "org_1" else None
            permissions = sorted(ROLE_PERMISSIONS[role]) if role else []
            principal = {"type": "user", "id": fields["user_id"]} if role else None
            return {
                "allowed": fields["permission"] in permissions,
                "org_id": "org_1",
                "principal": principal,
                "role": role,
                "permissions": permissions,
            }
        if name == "get_organization":
            return {
                "org_id": "org_1",
                "name": "Analytical <Engines>",
                "plan": "pro",
                "members": [
                    {"user_id": "ada", "email": "ada@engines.io", "role": "owner", "joined_at": "2025-12-01T10:00:00Z"},
                    {"user_id": "alan", "email": "alan@engines.io", "role": "developer", "joined_at": "2025-12-02T10:00:00Z"},
                ],
                "invitations": [
                    {
                        "invitation_id": "inv_1",
                        "email": "kat@engines.io",
                        "role": "developer",
                        "expires_at": "2025-12-18T10:00:00Z",
                        "status": "pending",
                    }
                ],
                "seats": QUOTE,
                "members_next_cursor": None,
                "invitations_next_cursor": None,
            }
        if name == "invitations":
            embedded = (await self.query(service, "get_organization", org_id=fields["org_id"]))["invitations"]
            chosen = [i for i in embedded if fields.get("status") in (None, i["status"])]
            return {"invitations": chosen, "next_cursor": None}
        if name == "invitation":
            if fields["token"] != "good":
                raise InvalidToken("the invitation token does not match")
            return {
                "org_id": "org_1",
                "org_name": "Analytical Engines",
                "email": "kat@engines.io",
                "role": "developer",
                "invited_by": {"type": "user", "id": "ada"},
                "expires_at": "2025-12-18T10:00:00Z",
                "status": self.link_status,
            }
        raise AssertionError(f"unexpected query {service}.{name}")


@dataclass(frozen=True)
class StandInUser(SignedInUser):
    csrf_token: str = ""


class CookieSessions:
    """A stand-in session: the `who` cookie names the user (the real reader opens a sealed cookie)."""

    async def signed_in(self, request: Any) -> SignedInUser | None:
        who = request.cookies.get("who")
        return StandInUser(user_id=who, email=f"{who}@engines.io", csrf_token=f"csrf-for-{who}") if who else None


def client(bus: StandInBus | None = None, who: str | None = None) -> TestClient:
    edge = Edge(bus or StandInBus(), CookieSessions(), WebSettings(), "http://localhost:8080")  # type: ignore[arg-type]
    test_client = TestClient(create_app(edge))
    if who:
        test_client.cookies.set("who", who)
    return test_client


def test_money_is_formatted_only_for_display():
    assert [dollars(c) for c in (1000, 516, 5, 0, -320, 123456)] == ["$10", "$5.16", "$0.05", "$0", "-$3.20", "$1,234.56"]


def test_the_owner_sees_every_action_and_the_seat_meter():
    with client(who="ada") as c:
        page = c.get("/orgs/org_1/settings/team")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "2 of 3 seats used" in html
    assert "Analytical &lt;Engines&gt;" in html  # escaped
    assert 'id="add-member-open"' in html and 'data-action="revoke-invitation"' in html
    assert 'data-action="remove-member"' in html and 'data-user="alan"' in html
    assert 'data-can-buy="true"' in html
    assert 'content="csrf-for-ada"' in html
    assert 'href="/orgs/org_1/settings/billing"' in html and 'href="/orgs/org_1/settings/audit"' in html


class LongHistoryBus(StandInBus):
    """An organization whose first 100 invitations are revoked, with one pending invitation after them
    and a second page of pending ones."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[dict[str, Any]] = []

    async def query(self, service: str, name: str, **fields: Any) -> Any:
        if name == "invitations":
            self.asked.append(fields)
            pending = {
                "invitation_id": "inv_new" if fields.get("cursor") is None else "inv_later",
                "email": "newest@engines.io" if fields.get("cursor") is None else "later@engines.io",
                "role": "developer",
                "expires_at": "2025-12-18T10:00:00Z",
                "status": "pending",
            }
            return {"invitations": [pending], "next_cursor": "cur_2" if fields.get("cursor") is None else None}
        answer = await super().query(service, name, **fields)
        if name == "get_organization":
            revoked = {**answer["invitations"][0], "status": "revoked"}
            answer = {
                **answer,
                "invitations": [{**revoked, "invitation_id": f"inv_{n}"} for n in range(100)],
                "invitations_next_cursor": "cur_embedded",
            }
        return answer


def test_the_team_page_lists_pending_invitations_beyond_the_first_hundred_of_any_status():
    bus = LongHistoryBus()
    with client(bus, who="ada") as c:
        first = c.get("/orgs/org_1/settings/team")
        later = c.get("/orgs/org_1/settings/team", params={"invitations_after": "cur_2"})
        bad = c.get("/orgs/org_1/settings/team", params={"invitations_after": "not a cursor!"})
    assert first.status_code == 200
    assert "newest@engines.io" in first.text and 'data-invitation="inv_new"' in first.text
    assert 'href="/orgs/org_1/settings/team?invitations_after=cur_2#invitations-heading"' in first.text
    assert later.status_code == 200 and "later@engines.io" in later.text and "newest@engines.io" not in later.text
    assert "More pending invitations" not in later.text and 'href="/orgs/org_1/settings/team">First pending' in later.text
    assert [(a["status"], a.get("cursor")) for a in bus.asked] == [("pending", None), ("pending", "cur_2")]
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")


def test_a_developer_sees_the_team_without_actions_or_billing():
    with client(who="alan") as c:
        page = c.get("/orgs/org_1/settings/team")
        billing = c.get("/orgs/org_1/settings/billing")
    assert page.status_code == 200
    assert "add-member-open" not in page.text and "data-action" not in page.text
    assert "/settings/billing" not in page.text and "/settings/audit" not in page.text
    assert billing.status_code == 403 and billing.headers["content-type"].startswith("text/html")
    assert "You can&#39;t open this page" in billing.text


def test_an_admin_may_invite_but_not_buy_seats_nor_touch_owners():
    with client(who="grace") as c:
        html = c.get("/orgs/org_1/settings/team").text
    assert 'data-can-buy="false"' in html
    assert 'data-user="ada"' not in html  # the owner's row has no controls
    assert '<option value="owner"' not in html


def test_pages_without_a_session_say_how_to_sign_in():
    with client() as c:
        page = c.get("/orgs/org_1/settings/team")
    assert page.status_code == 401 and "teamctl login" in page.text
    assert "--next '/orgs/org_1/settings/team'" in page.text


def test_a_stranger_and_a_bad_address_get_html_pages():
    with client(who="mallory") as c:
        assert c.get("/orgs/org_1/settings/team").status_code == 403
        bad = c.get("/orgs/not an id!/settings/team")
    assert bad.status_code == 404 and bad.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("status", "http", "says"),
    [
        ("pending", 200, "Join Analytical Engines"),
        ("revoked", 410, "This invitation was revoked"),
        ("expired", 410, "This invitation has expired"),
        ("accepted", 409, "already accepted"),
    ],
)
def test_the_invitation_link_says_what_happened(status, http, says):
    with client(StandInBus(link_status=status)) as c:
        page = c.get("/invitations/inv_1/accept", params={"token": "good"})
    assert page.status_code == http and says in page.text


@pytest.mark.parametrize("token", ["wrong", "", "has space", "x" * 600, None])
def test_an_invalid_link_reveals_nothing(token):
    with client() as c:
        page = c.get("/invitations/inv_1/accept", params={} if token is None else {"token": token})
    assert page.status_code == 404 and "This invitation link is not valid" in page.text
    assert "kat@engines.io" not in page.text


def test_the_invitation_link_asks_to_sign_in_then_offers_accept_to_the_right_person_only():
    with client() as c:
        anonymous = c.get("/invitations/inv_1/accept", params={"token": "good"}).text
    assert "Sign in to accept" in anonymous and "accept-invitation" not in anonymous
    with client(who="kat") as c:
        invited = c.get("/invitations/inv_1/accept", params={"token": "good"}).text
    assert 'id="accept-invitation"' in invited
    with client(who="alan") as c:
        someone_else = c.get("/invitations/inv_1/accept", params={"token": "good"}).text
    assert "This invitation is for someone else" in someone_else and "accept-invitation" not in someone_else


def test_static_files_are_served_and_the_pages_stay_out_of_the_api_document():
    with client() as c:
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
        paths = c.app.openapi_schema.to_schema()["paths"]
    assert not any(path.startswith(("/orgs", "/invitations", "/static")) for path in paths)


def test_now_is_not_used_by_rendering():
    # Dates render from the values given, in UTC, whatever the machine's zone.
    from services.web.pages.rendering import day, moment, short_day

    at = datetime(2025, 12, 27, 14, 5, tzinfo=UTC)
    assert (day(at), short_day(at), moment(at)) == ("27 Dec 2025", "27 Dec", "27 Dec 2025, 14:05 UTC")
