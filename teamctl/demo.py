"""`teamctl demo`: a team's story against the running stack, and what each service made of it."""

from __future__ import annotations

import asyncio
import email
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .client import Client

LINK = re.compile(r"/invitations/(?P<invitation>[^/\s]+)/accept\?token=(?P<token>[A-Za-z0-9_\-%]+)")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


async def run_demo(client: Client, mail_dir: Path) -> int:
    suffix = uuid.uuid4().hex[:6]
    owner = {"type": "user", "id": f"ada-{suffix}"}
    created = await client.command(
        "create_organization",
        name=f"Analytical Engines {suffix}",
        plan="pro",
        owner={"user_id": owner["id"], "email": f"ada-{suffix}@engines.example"},
    )
    org = created["result"]["org_id"]
    say(f"1. Ada founds {org} on the pro plan (3 seats included).")

    invited = {}
    for name, role in (("grace", "admin"), ("alan", "developer")):
        address = f"{name}-{suffix}@engines.example"
        reply = await client.command("invite_member", org_id=org, actor=owner, email=address, role=role)
        invited[name] = reply["result"]["invitation_id"]
        say(f"2. Ada invites {address} as {role}.")
    quote = (await client.query("membership", "seat_quote", org_id=org))["result"]
    say(
        f"3. Seats: {quote['seats_used']} of {quote['seats_total']} used; the next seat costs {quote['next_seat_charge_cents']} cents now."
    )
    bought = await client.command(
        "invite_member",
        org_id=org,
        actor=owner,
        email=f"kat-{suffix}@engines.example",
        role="developer",
        accept_charge_cents=quote["next_seat_charge_cents"],
    )
    say(f"4. Ada invites Kat too, buying a seat for {bought['result']['seat_charge_cents']} cents.")

    grace_mail = await _wait_for_mail(mail_dir, f"grace-{suffix}@engines.example")
    if grace_mail is not None:
        invitation_id, token = grace_mail[1]
        accepted = await client.command(
            "accept_invitation",
            org_id=org,
            actor={"type": "user", "id": f"grace-{suffix}"},
            invitation_id=invitation_id,
            token=token,
            user_id=f"grace-{suffix}",
        )
        say(f"5. Grace follows the link in her email and joins: {accepted['ok']}.")
    key = await client.command("create_api_key", org_id=org, actor=owner, name="ci", permissions=["gateway:use"], projects=["ci"])
    say(f"6. Ada creates an API-only key for CI ({key['result']['prefix']}…), allowed only gateway:use, only in project ci.")
    for project in ("ci", "web"):
        asked = await client.query(
            "membership", "authorize", api_key=key["result"]["secret"], permission="gateway:use", project_id=project
        )
        verdict = "allowed" if asked["result"]["allowed"] else "denied"
        say(f"   The gateway asks for gateway:use in project {project}: {verdict}.")
    await _custom_role(client, org, owner, suffix, mail_dir)
    await asyncio.sleep(1.5)

    view = (await client.query("membership", "get_organization", org_id=org))["result"]
    say("\nMembers:")
    for member in view["members"]:
        say(f"  {member['email']:<40} {member['role']}")
    say("Invitations:")
    for invitation in view["invitations"]:
        say(f"  {invitation['email']:<40} {invitation['status']}")
    say("Charges (billing):")
    for charge in await _result(client, "billing", "charges", org, "charges"):
        say(f"  {charge['kind']:<16} {charge['amount_cents']:>6} cents  for {charge['quantity']} seat(s)")
    say("Audit log:")
    for entry in await _result(client, "audit", "search", org, "entries"):
        say(
            f"  #{entry['seq']:<3} {entry['occurred_at']}  {entry['action']:<22} by {entry['actor']['type']} {entry['actor']['id']}"
        )
    say("Emails (notifier):")
    for delivery in await _result(client, "notifier", "deliveries", org, "deliveries"):
        landed = _file_for(mail_dir, delivery["event_id"])
        say(f"  {delivery['to']:<40} {delivery['status']:<8} {landed or ''}")
    return 0


async def _custom_role(client: Client, org: str, owner: dict[str, str], suffix: str, mail_dir: Path) -> None:
    """Enterprise: a custom "billing viewer" role, defined and given to Alan once he has joined."""
    moved = await client.command("change_plan", org_id=org, actor=owner, plan="enterprise")
    say(f"7. Ada moves to the enterprise plan: {moved['ok']}.")
    defined = await client.command(
        "define_role",
        org_id=org,
        actor=owner,
        role_key="billing-viewer",
        name="Billing viewer",
        description="reads invoices and charges",
        permissions=["billing:read", "members:read", "org:read"],
    )
    say(f"8. Ada defines a custom role billing-viewer ({', '.join(defined['result']['permissions'])}).")
    alan_mail = await _wait_for_mail(mail_dir, f"alan-{suffix}@engines.example")
    if alan_mail is None:
        return
    invitation_id, token = alan_mail[1]
    alan = f"alan-{suffix}"
    joined = await client.command(
        "accept_invitation",
        org_id=org,
        actor={"type": "user", "id": alan},
        invitation_id=invitation_id,
        token=token,
        user_id=alan,
    )
    changed = await client.command("change_role", org_id=org, actor=owner, user_id=alan, role="billing-viewer")
    say(f"9. Alan joins ({joined['ok']}) and Ada makes him a billing viewer: {changed['ok']}.")
    for permission in ("billing:read", "members:invite"):
        asked = await client.query("membership", "authorize", org_id=org, user_id=alan, permission=permission)
        verdict = "allowed" if asked["result"]["allowed"] else "denied"
        say(f"   Alan asks for {permission}: {verdict}.")


async def _result(client: Client, service: str, query: str, org: str, field: str) -> list[dict[str, Any]]:
    try:
        reply = await client.query(service, query, org_id=org)
    except Exception:
        return []
    return reply["result"][field] if reply.get("ok") else []


async def _wait_for_mail(mail_dir: Path, address: str, timeout: float = 15.0) -> tuple[Path, tuple[str, str]] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")):  # noqa: ASYNC240 - a demo polling a local folder
            message = email.message_from_bytes(path.read_bytes())
            if address in (message.get("To") or ""):
                for part in message.walk():
                    if part.get_content_type() == "text/plain":
                        payload = part.get_payload(decode=True)
                        match = LINK.search(payload.decode()) if isinstance(payload, bytes) else None
                        if match:
                            return path, (unquote(match["invitation"]), unquote(match["token"]))
        await asyncio.sleep(0.3)
    return None


def _file_for(mail_dir: Path, event_id: str) -> str | None:
    for path in sorted(mail_dir.glob("*.eml")):
        if event_id in (email.message_from_bytes(path.read_bytes()).get("Message-ID") or ""):
            return str(path)
    return None
