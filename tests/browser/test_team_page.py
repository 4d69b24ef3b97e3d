"""The product's flow in a real browser: Playwright drives Debian's Chromium against the whole stack
(membership, billing, audit, the notifier and the HTTP edge as child processes, on the tests' own
NATS, PostgreSQL and SMTP sink). Screenshots of each page go to the test's artifacts directory.

Never skipped: `make test` installs /usr/bin/chromium first (`make browser`)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from devstack import free_port
from services.web.pages.rendering import dollars, short_day
from services.web.signin_links import local_sign_in_link
from teamctl.client import Client
from tests.e2e.stack import accept_link, mails_to
from tests.servers import smtp_sink_in_scratch_dir
from tests.services_under_test import running_service
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # as root, Chromium needs it
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Kept after the run (ignored by git) so a person can look at them; the test's tmp_path has a copy too.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
OWNER = ("ada", "ada@engines.io")
DEVELOPERS = (("alan", "alan@engines.io"), ("kat", "kat@engines.io"))
THIRD = ("linus", "linus@engines.io")


class Stack:
    def __init__(self, env: dict[str, str], public_url: str, mail_dir: Path) -> None:
        self.env = env
        self.public_url = public_url
        self.mail_dir = mail_dir

    def sign_in_link(self, user: tuple[str, str], next_path: str) -> str:
        return local_sign_in_link(self.env["SERVER_SECRET"], self.public_url, user[0], user[1], datetime.now(UTC), next_path)


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    with smtp_sink_in_scratch_dir() as sink, ExitStack() as services:
        env = {
            **service_env,
            "SMTP_URL": sink.url,
            "PUBLIC_URL": public_url,
            "WEB_PORT": str(port),
            "SMTP_RETRY_BASE_SECONDS": "0.2",
        }
        for name in ("membership", "billing", "audit", "notifier", "web"):
            services.enter_context(running_service(name, env, tmp_path))
        yield Stack(env, public_url, sink.mail_dir)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run `make browser` (or: sudo apt-get install -y chromium)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


class Shots:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page: Page, name: str) -> None:
        path = self.directory / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, ARTIFACTS / path.name)


async def person(browser: Browser) -> BrowserContext:
    return await browser.new_context(viewport={"width": 1180, "height": 820})


async def invite(page: Page, email: str, expect_text: str) -> None:
    await page.get_by_role("button", name="Add member").click()
    dialog = page.get_by_role("dialog", name="Add member")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#add-member-seats")).to_contain_text(expect_text)
    await dialog.get_by_label("Email").fill(email)
    await dialog.get_by_label("Role").select_option("developer")


async def test_an_owner_builds_a_team_in_the_browser(stack: Stack, browser: Browser, nc, tmp_path: Path):
    shots = Shots(tmp_path / "screenshots")
    client = Client(nc)
    founded = await client.command(
        "create_organization", name="Analytical Engines", plan="pro", owner={"user_id": OWNER[0], "email": OWNER[1]}
    )
    org = founded["result"]["org_id"]
    team_path = f"/orgs/{org}/settings/team"

    # 1. The owner signs in and opens Team: one of three seats used.
    owner = await (await person(browser)).new_page()
    await owner.goto(stack.sign_in_link(OWNER, team_path))
    await expect(owner).to_have_url(re.compile(re.escape(team_path) + "$"))
    await expect(owner.locator(".seat-meter")).to_contain_text("1 of 3 seats used")
    await shots.take(owner, "01-team-owner")

    # 2. Two developers invited: the dialog says the seats left, and there is no charge.
    await invite(owner, DEVELOPERS[0][1], "2 seats left: no charge.")
    await shots.take(owner, "02-add-member-dialog")
    await owner.locator("#add-member-confirm").click()
    await expect(owner.locator("table").nth(1)).to_contain_text(DEVELOPERS[0][1])
    await invite(owner, DEVELOPERS[1][1], "1 seat left: no charge.")
    await owner.locator("#add-member-confirm").click()
    await expect(owner.locator("table").nth(1)).to_contain_text(DEVELOPERS[1][1])
    await expect(owner.locator(".seat-meter")).to_contain_text("3 of 3 seats used")

    # 3. The third needs a seat: the dialog shows the prorated amount, which the owner confirms.
    quote = (await client.query("membership", "seat_quote", org_id=org))["result"]
    expected = (
        f"{dollars(quote['next_seat_charge_cents'])} now for the rest of this period, ending "
        f"{short_day(quote['billing_period_end'])}; then {dollars(quote['unit_price_cents'])} a month."
    )
    await invite(owner, THIRD[1], "No seats left")
    await expect(owner.locator("#add-member-seats .prorated")).to_have_text(expected)
    await shots.take(owner, "03-add-member-prorated")
    await owner.get_by_role("button", name="Buy a seat and add member").click()
    await expect(owner.locator("table").nth(1)).to_contain_text(THIRD[1])
    await expect(owner.locator(".seat-meter")).to_contain_text("4 of 4 seats used")
    await shots.take(owner, "04-team-after-invitations")

    # 4. Alan opens the link in his email, signs in as himself and accepts.
    mail = await eventually(lambda: _mails(stack.mail_dir, DEVELOPERS[0][1]), timeout=30)
    invitation_id, token = accept_link(mail[0])
    link_path = f"/invitations/{invitation_id}/accept?token={token}"
    alan = await (await person(browser)).new_page()
    await alan.goto(stack.public_url + link_path)
    await expect(alan.get_by_role("heading", name="Join Analytical Engines")).to_be_visible()
    await expect(alan.locator(".facts")).to_contain_text("Developer")
    await expect(alan.get_by_role("heading", name="Sign in to accept")).to_be_visible()
    await shots.take(alan, "05-invitation-signed-out")
    await alan.goto(stack.sign_in_link(DEVELOPERS[0], link_path))
    await expect(alan.get_by_role("button", name="Accept and join Analytical Engines")).to_be_visible()
    await shots.take(alan, "06-invitation-accept")
    await alan.get_by_role("button", name="Accept and join Analytical Engines").click()
    await expect(alan).to_have_url(re.compile(re.escape(team_path) + "$"))

    # 5. The owner's page now lists him among the members.
    await owner.reload()
    await expect(owner.locator("table").first).to_contain_text(DEVELOPERS[0][1])
    await shots.take(owner, "07-team-with-new-member")

    # 6. A developer sees no billing link, and the billing URL answers 403.
    await expect(alan.get_by_role("navigation", name="Settings")).to_be_visible()
    await expect(alan.get_by_role("link", name="Billing")).to_have_count(0)
    await expect(alan.get_by_role("button", name="Add member")).to_have_count(0)
    await shots.take(alan, "08-team-developer")
    response = await alan.goto(f"{stack.public_url}/orgs/{org}/settings/billing")
    assert response is not None and response.status == 403
    await expect(alan.get_by_role("heading", name="You can't open this page")).to_be_visible()
    await shots.take(alan, "09-billing-forbidden")

    # 7. The owner revokes Kat's invitation; her link then says so.
    owner.once("dialog", lambda dialog: dialog.accept())
    kat_row = owner.locator("tr", has_text=DEVELOPERS[1][1])
    await kat_row.get_by_role("button", name="Revoke").click()
    await expect(owner.locator("tr", has_text=DEVELOPERS[1][1])).to_have_count(0)
    kat_mail = await eventually(lambda: _mails(stack.mail_dir, DEVELOPERS[1][1]), timeout=30)
    kat_invitation, kat_token = accept_link(kat_mail[0])
    kat = await (await person(browser)).new_page()
    revoked = await kat.goto(f"{stack.public_url}/invitations/{kat_invitation}/accept?token={kat_token}")
    assert revoked is not None and revoked.status == 410
    await expect(kat.get_by_role("heading", name="This invitation was revoked")).to_be_visible()
    await shots.take(kat, "10-invitation-revoked")

    # The owner's billing page shows the seat bought in step 3.
    await owner.goto(f"{stack.public_url}/orgs/{org}/settings/billing")
    await expect(owner.locator("#charges-heading + table")).to_contain_text(dollars(quote["next_seat_charge_cents"]))
    await shots.take(owner, "11-billing-owner")


async def _mails(mail_dir: Path, address: str) -> list:
    return mails_to(mail_dir, address)
