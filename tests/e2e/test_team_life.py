"""A team's whole life, through NATS only, against the four services started the way `make run` starts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from teamctl.client import Client
from tests.e2e.stack import Supervisor, accept_link, mails_to
from tests.servers import smtp_sink_in_scratch_dir
from tests.waiting import eventually

OWNER = {"type": "user", "id": "ada"}


@pytest.fixture
def smtp_sink():
    with smtp_sink_in_scratch_dir() as sink:  # a mailbox of its own: exact counts below
        yield sink


@pytest.fixture
def stack(service_env, smtp_sink, tmp_path: Path):
    env = {**service_env, "SMTP_URL": smtp_sink.url, "PUBLIC_URL": "https://gateway.test", "SMTP_RETRY_BASE_SECONDS": "0.2"}
    supervisor = Supervisor(env, tmp_path / "run.log")
    supervisor.start()
    yield supervisor
    assert supervisor.stop() == 0, supervisor.output()[-3000:]


async def test_a_team_from_founding_to_offboarding(stack, nc, smtp_sink):
    client = Client(nc)
    founded = await client.command(
        "create_organization", name="Analytical Engines", plan="pro", owner={"user_id": "ada", "email": "ada@engines.io"}
    )
    org = founded["result"]["org_id"]

    # Two teammates fill the included seats; a third needs a seat bought, and the invite says what it costs.
    for email, role in (("grace@engines.io", "admin"), ("alan@engines.io", "developer")):
        assert (await client.command("invite_member", org_id=org, actor=OWNER, email=email, role=role))["ok"]
    refused = await client.command("invite_member", org_id=org, actor=OWNER, email="kat@engines.io", role="developer")
    assert refused["error"]["code"] == "seat_purchase_required"
    price = refused["error"]["details"]["next_seat_charge_cents"]
    kat = await client.command(
        "invite_member", org_id=org, actor=OWNER, email="kat@engines.io", role="developer", accept_charge_cents=price
    )
    assert kat["ok"] and kat["result"]["seat_charge_cents"] == price

    # Grace accepts through the link in her email.
    grace_mail = await eventually(lambda: _mail(smtp_sink, "grace@engines.io"), timeout=30)
    invitation_id, token = accept_link(grace_mail[0])
    accepted = await client.command(
        "accept_invitation",
        org_id=org,
        actor={"type": "user", "id": "grace"},
        invitation_id=invitation_id,
        token=token,
        user_id="grace",
    )
    assert accepted["result"] == {"user_id": "grace", "role": "admin"}

    # Alan's invitation is resent: the new email's link works, the old one no longer does.
    alan_first = await eventually(lambda: _mail(smtp_sink, "alan@engines.io"), timeout=30)
    alan_invitation, old_token = accept_link(alan_first[0])
    assert (await client.command("resend_invitation", org_id=org, actor=OWNER, invitation_id=alan_invitation))["ok"]
    alan_mails = await eventually(lambda: _mail(smtp_sink, "alan@engines.io", count=2), timeout=30)
    _, new_token = accept_link(alan_mails[-1])
    stale = await client.command(
        "accept_invitation",
        org_id=org,
        actor={"type": "user", "id": "alan"},
        invitation_id=alan_invitation,
        token=old_token,
        user_id="alan",
    )
    assert stale["error"]["code"] == "invalid_token"
    assert (
        await client.command(
            "accept_invitation",
            org_id=org,
            actor={"type": "user", "id": "alan"},
            invitation_id=alan_invitation,
            token=new_token,
            user_id="alan",
        )
    )["ok"]

    # Grace, an admin, promotes Alan but cannot make anyone an owner; Kat's invitation is revoked.
    assert (await client.command("change_role", org_id=org, actor={"type": "user", "id": "grace"}, user_id="alan", role="admin"))[
        "ok"
    ]
    denied = await client.command("change_role", org_id=org, actor={"type": "user", "id": "grace"}, user_id="alan", role="owner")
    assert denied["error"]["code"] == "permission_denied"
    kat_invitation = kat["result"]["invitation_id"]
    assert (await client.command("revoke_invitation", org_id=org, actor=OWNER, invitation_id=kat_invitation))["ok"]

    # Alan gets an API-only key with just gateway access; it works until Alan leaves.
    key = await client.command(
        "create_api_key",
        org_id=org,
        actor={"type": "user", "id": "alan"},
        name="ci",
        permissions=["gateway:use"],
        owner_user_id="alan",
    )
    secret = key["result"]["secret"]
    assert (await client.query("membership", "authorize", api_key=secret, permission="gateway:use"))["result"]["allowed"]
    assert not (await client.query("membership", "authorize", api_key=secret, permission="members:invite"))["result"]["allowed"]
    removed = await client.command("remove_member", org_id=org, actor=OWNER, user_id="alan")
    assert removed["result"]["revoked_api_keys"] == [key["result"]["key_id"]]
    assert not (await client.query("membership", "authorize", api_key=secret, permission="gateway:use"))["result"]["allowed"]

    # The seat bought for Kat is free again and released, for a prorated credit; the org goes enterprise.
    released = await client.command("remove_seats", org_id=org, actor=OWNER, quantity=1)
    assert released["ok"]
    assert (await client.command("change_plan", org_id=org, actor=OWNER, plan="enterprise"))["ok"]

    view = (await client.query("membership", "get_organization", org_id=org))["result"]
    assert sorted((m["user_id"], m["role"]) for m in view["members"]) == [("ada", "owner"), ("grace", "admin")]

    # Billing: the seat charge and its credit, each traceable to its event.
    charges = await eventually(lambda: _charges(client, org, 2), timeout=30)
    assert [(c["kind"], c["amount_cents"]) for c in charges] == [
        ("seat_proration", price),
        ("seat_credit", -released["result"]["credit_cents"]),
    ]
    # Audit: one entry per event, the chain intact.
    events = await _event_count(nc, org)
    entries = await eventually(lambda: _entries(client, org, events), timeout=30)
    assert [e["action"] for e in entries][-3:] == ["api_key.revoked", "seats.removed", "plan.changed"]
    assert (await client.query("audit", "verify", org_id=org))["result"]["ok"] is True
    # Notifier: four invitation emails (Kat's too, before its revocation), and nothing mailed twice.
    deliveries = (await client.query("notifier", "deliveries", org_id=org))["result"]["deliveries"]
    assert sorted(d["to"] for d in deliveries if d["status"] == "sent") == [
        "alan@engines.io",
        "alan@engines.io",
        "grace@engines.io",
        "kat@engines.io",
    ]
    message_ids = [m["Message-ID"] for m in (_all_mail(smtp_sink))]
    assert len(message_ids) == len(set(message_ids)) == 4


async def _mail(smtp_sink, address: str, count: int = 1):
    found = mails_to(smtp_sink.mail_dir, address)
    return found if len(found) >= count else None


def _all_mail(smtp_sink):
    import email as email_module

    return [email_module.message_from_bytes(p.read_bytes()) for p in smtp_sink.messages()]


async def _charges(client: Client, org: str, count: int):
    reply = await client.query("billing", "charges", org_id=org)
    return reply["result"]["charges"] if reply["ok"] and len(reply["result"]["charges"]) >= count else None


async def _entries(client: Client, org: str, count: int):
    reply = await client.query("audit", "search", org_id=org)
    return reply["result"]["entries"] if reply["ok"] and len(reply["result"]["entries"]) >= count else None


async def _event_count(nc, org: str) -> int:
    from shared import subjects

    js = nc.jetstream()
    info = await js.stream_info(subjects.STREAM, subjects_filter=f"membership.events.{org}.>")
    return sum(info.state.subjects.values()) if info.state.subjects else info.state.messages
