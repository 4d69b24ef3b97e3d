"""Settings → Roles in Chromium against the whole stack: an Enterprise owner defines a custom role with the
permission checklist, edits it, offers it in the Add Member dialog with a project scope, is refused its
deletion while an invitation holds it, and deletes it once that invitation is revoked. Each outcome is
also read back over the bus."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from teamctl.client import Client
from tests.browser.test_team_page import ARTIFACTS, OWNER, Stack, browser, person, stack  # noqa: F401

pytestmark = pytest.mark.e2e

ROLE = "billing-viewer"
INVITEE = "grace@engines.io"


async def roles_over_bus(client: Client, org: str) -> dict[str, list[str]]:
    answer = await client.query("membership", "roles", org_id=org)
    assert answer["ok"], answer
    return {role["role_key"]: sorted(role["permissions"]) for role in answer["result"]["roles"]}


async def pending_invitations(client: Client, org: str) -> list[dict[str, Any]]:
    answer = await client.query("membership", "invitations", org_id=org, status="pending")
    assert answer["ok"], answer
    invitations: list[dict[str, Any]] = answer["result"]["invitations"]
    return invitations


def screenshot_path(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"


def keep_in_artifacts(path: Path) -> None:
    """Also into test-artifacts/browser/, next to (not instead of) the Team page's screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


async def screenshot(page: Page, directory: Path, name: str) -> None:
    path = screenshot_path(directory, name)
    await page.screenshot(path=str(path), full_page=True)
    keep_in_artifacts(path)


async def test_an_owner_defines_uses_and_deletes_a_role(stack: Stack, browser: Browser, nc, tmp_path: Path) -> None:  # noqa: F811
    client = Client(nc)
    founded = await client.command(
        "create_organization", name="Analytical Engines", plan="enterprise", owner={"user_id": OWNER[0], "email": OWNER[1]}
    )
    assert founded["ok"], founded
    org = founded["result"]["org_id"]
    roles_path = f"/orgs/{org}/settings/roles"

    # 1. The owner opens Settings → Roles: none defined yet.
    owner = await (await person(browser)).new_page()
    await owner.goto(stack.sign_in_link(OWNER, roles_path))
    await expect(owner).to_have_url(re.compile(re.escape(roles_path) + "$"))
    await expect(owner.get_by_role("heading", name="Roles", exact=True)).to_be_visible()
    await expect(owner.locator("#roles-heading")).to_contain_text("0")

    # 2. Defines billing-viewer with the checklist; the page lists it, and so does membership.
    define = owner.locator("#define-role-form")
    await define.get_by_label("Key", exact=True).fill(ROLE)
    await define.get_by_label("Name", exact=True).fill("Billing viewer")
    await define.get_by_label("Description (optional)", exact=True).fill("reads invoices")
    for permission in ("billing:read", "members:read", "org:read"):
        await define.get_by_label(permission, exact=True).check()
    await define.get_by_role("button", name="Define role").click()
    row = owner.locator(f"tr[data-role-key='{ROLE}']")
    await expect(row).to_contain_text("Billing viewer")
    await expect(row.locator("td").nth(2)).to_have_text("billing:read members:read org:read")
    await expect(owner.locator("#roles-heading")).to_contain_text("1")
    assert await roles_over_bus(client, org) == {ROLE: ["billing:read", "members:read", "org:read"]}

    # 3. Edits it: audit:read added; the row shows it after the reload, and membership has it.
    await row.locator("summary", has_text="Edit").click()
    edit = row.locator("form.role-form")
    await edit.get_by_label("audit:read", exact=True).check()
    await edit.get_by_role("button", name="Save Billing viewer").click()
    await expect(row.locator("td").nth(2)).to_have_text("audit:read billing:read members:read org:read")
    assert await roles_over_bus(client, org) == {ROLE: ["audit:read", "billing:read", "members:read", "org:read"]}
    await screenshot(owner, tmp_path / "screenshots", "11-roles")

    # 4. The Team page's Add Member dialog offers the role; the owner invites with it, scoped to ci.
    team_path = f"/orgs/{org}/settings/team"
    await owner.goto(stack.public_url + team_path)
    await owner.get_by_role("button", name="Add member").click()
    dialog = owner.get_by_role("dialog", name="Add member")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Role").locator(f"option[value='{ROLE}']")).to_have_count(1)
    await dialog.get_by_label("Email").fill(INVITEE)
    await dialog.get_by_label("Role").select_option(ROLE)
    await dialog.get_by_label("Projects (optional)").fill("ci")
    await owner.locator("#add-member-confirm").click()
    invitation_row = owner.locator("tr", has_text=INVITEE)
    await expect(invitation_row).to_contain_text("Billing viewer")
    await expect(invitation_row.locator("td").nth(2)).to_have_text("ci")
    [invitation] = await pending_invitations(client, org)
    assert (invitation["email"], invitation["role"], invitation["projects"]) == (INVITEE, ROLE, ["ci"])

    # 5. Deleting the role is refused, naming the pending invitation that holds it; nothing changes.
    await owner.goto(stack.public_url + roles_path)
    owner.once("dialog", lambda confirm: confirm.accept())
    await owner.locator(f"tr[data-role-key='{ROLE}']").get_by_role("button", name="Delete").click()
    await expect(owner.locator("#roles-error")).to_have_text(
        f"This role is still held by pending invitations {invitation['invitation_id']}. Give them another role first."
    )
    assert ROLE in await roles_over_bus(client, org)

    # 6. The owner revokes the invitation on the Team page, then deletes the role, which disappears.
    await owner.goto(stack.public_url + team_path)
    owner.once("dialog", lambda confirm: confirm.accept())
    await owner.locator("tr", has_text=INVITEE).get_by_role("button", name="Revoke").click()
    await expect(owner.locator("tr", has_text=INVITEE)).to_have_count(0)
    assert await pending_invitations(client, org) == []
    await owner.goto(stack.public_url + roles_path)
    owner.once("dialog", lambda confirm: confirm.accept())
    await owner.locator(f"tr[data-role-key='{ROLE}']").get_by_role("button", name="Delete").click()
    await expect(owner.locator(f"tr[data-role-key='{ROLE}']")).to_have_count(0)
    await expect(owner.locator(".empty")).to_have_text("No custom roles yet.")
    assert await roles_over_bus(client, org) == {}
