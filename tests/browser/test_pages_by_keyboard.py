"""The pages' rules a browser keeps, proved in Chromium against the whole stack: keyboard use (Tab reaches
every control, the dialog traps focus, Escape gives focus back, a role changes only on purpose), what the
Add Member dialog sends (a new Idempotency-Key per opening and after a refusal, one POST for two Enters,
a new key and the new amount after charge_mismatch), a long history on the Team and Audit pages, sign-out, and API keys."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from shared.invitations import invitation_token
from teamctl.client import Client
from tests.browser.test_team_page import OWNER, Stack, browser, person, stack  # noqa: F401
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OWNER_ACTOR = {"type": "user", "id": OWNER[0]}

# Numbers each control a keyboard user should reach (visible, enabled, not in a closed dialog).
NUMBER_THE_CONTROLS = """() => {
  const controls = Array.from(document.querySelectorAll("a[href], button, select, input:not([type=hidden]), textarea"))
    .filter((e) => !e.disabled && !e.closest("dialog:not([open])") && e.getClientRects().length > 0);
  controls.forEach((e, i) => { e.dataset.tabStop = String(i); });
  return controls.length;
}"""
# Every fetch the page's script starts, recorded as it starts (before any answer).
RECORD_FETCHES = """
window.__fetches = [];
const originalFetch = window.fetch;
window.fetch = function (input, init) {
  window.__fetches.push(((init && init.method) || "GET") + " " + String(input));
  return originalFetch.apply(this, arguments);
};
"""


async def new_org(client: Client, name: str) -> str:
    founded = await client.command("create_organization", name=name, plan="pro", owner={"user_id": OWNER[0], "email": OWNER[1]})
    assert founded["ok"], founded
    org_id: str = founded["result"]["org_id"]
    return org_id


async def join(client: Client, server_secret: str, org: str, user_id: str, role: str = "developer") -> None:
    sent = await client.command("invite_member", org_id=org, actor=OWNER_ACTOR, email=f"{user_id}@engines.io", role=role)
    assert sent["ok"], sent
    invitation_id, expires_at = sent["result"]["invitation_id"], sent["result"]["expires_at"]
    token = invitation_token(server_secret, invitation_id, datetime.fromisoformat(expires_at))
    accepted = await client.command(
        "accept_invitation",
        org_id=org,
        actor={"type": "user", "id": user_id},
        invitation_id=invitation_id,
        token=token,
        user_id=user_id,
    )
    assert accepted["ok"], accepted


async def focused(page: Page, script: str = "document.activeElement.id") -> Any:
    return await page.evaluate(f"() => {script}")


async def tab_to(page: Page, element_id: str, limit: int = 60) -> None:
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused(page) == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


async def every_control_is_reached_by_tab(page: Page) -> None:
    count = await page.evaluate(NUMBER_THE_CONTROLS)
    reached = set()
    for _ in range(count + 3):
        await page.keyboard.press("Tab")
        reached.add(await focused(page, "document.activeElement.dataset.tabStop"))
    assert {str(n) for n in range(count)} <= reached, (count, sorted(reached - {None}, key=int))


def posts_to(requests: list[Request], path_end: str) -> list[Request]:
    return [r for r in requests if r.method == "POST" and r.url.endswith(path_end)]


async def test_the_add_member_dialog_by_keyboard_and_what_it_sends(stack: Stack, browser: Browser, nc) -> None:  # noqa: F811
    client = Client(nc)
    org = await new_org(client, "Keyboard Works")
    page = await (await person(browser)).new_page()
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    await page.goto(stack.sign_in_link(OWNER, f"/orgs/{org}/settings/team"))
    await expect(page.locator(".seat-meter")).to_contain_text("1 of 3 seats used")

    # Tab reaches every control on the page; the focused one has a visible outline.
    await every_control_is_reached_by_tab(page)
    await tab_to(page, "add-member-open")
    outline = await focused(
        page, "[getComputedStyle(document.activeElement).outlineStyle, getComputedStyle(document.activeElement).outlineWidth]"
    )
    assert outline == ["solid", "3px"], outline

    # Enter opens the dialog on the email field; Tab and Shift+Tab stay inside; Escape gives focus back.
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Add member")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#invite-email")).to_be_focused()
    for key in ["Tab"] * 6 + ["Shift+Tab"] * 6:
        await page.keyboard.press(key)
        assert await focused(page, "document.getElementById('add-member').contains(document.activeElement)"), key
    await page.locator("#invite-email").focus()
    await page.keyboard.press("Shift+Tab")
    assert await focused(page) == "add-member-confirm"
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#add-member-open")).to_be_focused()

    # Two Enters send one POST.
    await page.keyboard.press("Enter")
    await expect(page.locator("#invite-email")).to_be_focused()
    await page.keyboard.type("one@engines.io")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")
    await expect(page.locator("tr", has_text="one@engines.io")).to_have_count(1)
    assert len(posts_to(requests, "/invitations")) == 1

    # The next opening sends its own Idempotency-Key. Membership refuses inviting one@ again; the
    # corrected address is a new command under a new key, not the refused one's key reused.
    await page.locator("#add-member-open").focus()
    await page.keyboard.press("Enter")
    await page.keyboard.type("one@engines.io")
    await page.keyboard.press("Enter")
    await expect(page.locator("#add-member-error")).to_be_visible()
    await page.locator("#invite-email").fill("two@engines.io")
    await page.keyboard.press("Enter")
    await expect(page.locator("tr", has_text="two@engines.io")).to_have_count(1)
    await expect(page.locator(".seat-meter")).to_contain_text("3 of 3 seats used")
    first, refused, second = posts_to(requests, "/invitations")
    assert len({first.headers["idempotency-key"], refused.headers["idempotency-key"], second.headers["idempotency-key"]}) == 3

    # The quote the dialog shows is one cent (stale); membership answers charge_mismatch with the real
    # one, which the dialog shows; confirming again sends the real amount under a new key.
    async def stale_quote(route: Route) -> None:
        real = await route.fetch()
        await route.fulfill(response=real, json={**(await real.json()), "next_seat_charge_cents": 1})

    await page.route(re.compile(r".*/v1/orgs/[^/]+/seats$"), stale_quote)
    real_price = (await client.query("membership", "seat_quote", org_id=org))["result"]["next_seat_charge_cents"]
    await page.locator("#add-member-open").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#add-member-seats .prorated")).to_contain_text("$0.01 now")
    await page.keyboard.type("three@engines.io")
    await page.keyboard.press("Enter")
    await expect(page.locator("#add-member-seats .notice-changed")).to_be_visible()
    await expect(page.locator("#add-member-confirm")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("tr", has_text="three@engines.io")).to_have_count(1)
    stale, fresh = posts_to(requests, "/invitations")[3:]
    assert (stale.post_data_json["accept_charge_cents"], fresh.post_data_json["accept_charge_cents"]) == (1, real_price)
    keys = [r.headers["idempotency-key"] for r in posts_to(requests, "/invitations")]
    assert len(set(keys)) == 5, keys


async def test_a_long_history_a_role_changed_on_purpose_the_audit_log_and_sign_out(stack: Stack, browser: Browser, nc) -> None:  # noqa: F811
    client = Client(nc)
    org = await new_org(client, "Long History")
    await join(client, stack.env["SERVER_SECRET"], org, "alan")
    # More than the first page of invitations of any status, all revoked, then one that waits.
    for n in range(101):
        sent = await client.command("invite_member", org_id=org, actor=OWNER_ACTOR, email=f"gone{n}@engines.io", role="developer")
        revoked = await client.command(
            "revoke_invitation", org_id=org, actor=OWNER_ACTOR, invitation_id=sent["result"]["invitation_id"]
        )
        assert revoked["ok"], revoked
    assert (await client.command("invite_member", org_id=org, actor=OWNER_ACTOR, email="newest@engines.io", role="developer"))[
        "ok"
    ]

    context = await person(browser)
    await context.add_init_script(script=RECORD_FETCHES)
    page = await context.new_page()
    team = f"/orgs/{org}/settings/team"
    await page.goto(stack.sign_in_link(OWNER, team))
    newest = page.locator("tr", has_text="newest@engines.io")
    await expect(newest.get_by_role("button", name="Revoke")).to_be_visible()
    await expect(page.locator("tr", has_text="gone0@engines.io")).to_have_count(0)

    # An arrow key on Alan's role only moves the choice: nothing is sent, his role stays.
    role = page.get_by_label("Role of alan@engines.io", exact=True)
    apply = page.get_by_role("button", name="Change role of alan@engines.io")
    await expect(apply).to_be_disabled()
    await tab_to(page, await role.get_attribute("id") or "")
    await page.keyboard.press("ArrowUp")
    chosen = await role.evaluate("select => select.options[select.selectedIndex].text")
    assert chosen != "Developer"
    await expect(apply).to_be_enabled()  # the select's change handler has run
    assert not [f for f in await page.evaluate("window.__fetches") if f.startswith("PATCH")]
    members = (await client.query("membership", "members", org_id=org))["result"]["members"]
    assert {m["user_id"]: m["role"] for m in members}["alan"] == "developer"

    # Tab to Change role and press Enter: now it changes.
    await page.keyboard.press("Tab")
    await expect(apply).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(
        page.locator("tr", has_text="alan@engines.io").locator(f"option[value='{chosen.lower()}'][selected]")
    ).to_have_count(1)
    members = (await client.query("membership", "members", org_id=org))["result"]["members"]
    assert {m["user_id"]: m["role"] for m in members}["alan"] == chosen.lower()

    # The audit page: a filter narrows the entries, and the next page follows with the filter kept.
    await eventually(lambda: _audited(client, org, "invitation.revoked", 101), timeout=30)
    await page.goto(f"{stack.public_url}/orgs/{org}/settings/audit")
    await expect(page.get_by_role("status").filter(has_text="Chain verified")).to_be_visible()
    await page.get_by_label("Action").fill("invitation.revoked")
    await page.get_by_label("Action").press("Enter")
    await expect(page).to_have_url(re.compile(r"action=invitation\.revoked"))
    actions = page.locator("#entries-heading + table td:nth-child(3)")
    await expect(actions).to_have_count(50)
    assert set(await actions.all_inner_texts()) == {"invitation.revoked"}
    first_page = await page.locator("#entries-heading + table td:nth-child(1)").all_inner_texts()
    await page.get_by_role("link", name="Next 50 entries").click()
    await expect(actions).to_have_count(50)
    assert set(await actions.all_inner_texts()) == {"invitation.revoked"}
    second_page = await page.locator("#entries-heading + table td:nth-child(1)").all_inner_texts()
    assert not set(first_page) & set(second_page)
    await page.get_by_role("link", name="Next 50 entries").click()
    await expect(actions).to_have_count(1)
    await expect(page.get_by_role("link", name="Next 50 entries")).to_have_count(0)

    # Sign out from the header: the sign-in page, and the old cookie no longer signs anyone in.
    cookies = await context.cookies()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to see your team")).to_be_visible()
    replay = await person(browser)
    await replay.add_cookies(cookies)
    again = await (await replay.new_page()).goto(stack.public_url + team)
    assert again is not None and again.status == 401


async def _audited(client: Client, org: str, action: str, count: int) -> bool:
    found = await client.query("audit", "search", org_id=org, action=action, limit=1000)
    return len(found["result"]["entries"]) >= count


async def test_an_api_key_is_created_shown_once_listed_without_a_reload_and_revoked(stack: Stack, browser: Browser, nc) -> None:  # noqa: F811
    client = Client(nc)
    org = await new_org(client, "Keyed")
    page = await (await person(browser)).new_page()
    await page.goto(stack.sign_in_link(OWNER, f"/orgs/{org}/settings/api-keys"))
    await expect(page.get_by_text("No keys yet.")).to_be_visible()
    await page.evaluate("window.__samePage = true")

    await page.get_by_label("Name").fill("ci deploys")
    await page.get_by_role("button", name="Create key").click()
    secret_box = page.get_by_label("Secret")
    await expect(secret_box).to_be_visible()
    await expect(page.get_by_role("button", name="Copy")).to_be_visible()
    secret = await secret_box.input_value()
    assert secret
    row = page.locator("tr", has_text="ci deploys")
    await expect(row).to_contain_text("live")
    assert await page.evaluate("window.__samePage === true")  # no reload happened

    async with httpx.AsyncClient(base_url=stack.public_url) as api:
        assert (await api.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 200
        await page.reload()
        await expect(page.locator("tr", has_text="ci deploys")).to_be_visible()
        assert secret not in await page.content()  # shown once
        page.once("dialog", lambda dialog: dialog.accept())
        await page.locator("tr", has_text="ci deploys").get_by_role("button", name="Revoke").click()
        await expect(page.locator("tr", has_text="ci deploys")).to_contain_text("revoked")
        assert (await api.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
