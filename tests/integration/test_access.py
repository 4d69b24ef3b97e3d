"""`authorize` from the access index, another instance's index following the stream, and the
gateway's embedded authorizer on the access bucket: real NATS, PostgreSQL and the service process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from authorizer import Authorizer
from services.membership.access_index import AccessIndex, IndexFollower, stream_position
from services.membership.application import MembershipApplication
from services.membership.secrets import Secrets
from shared import subjects
from shared.clock import SystemClock
from shared.settings import postgres_env
from teamctl.client import Client
from tests.waiting import eventually

pytestmark = pytest.mark.integration

OWNER = {"type": "user", "id": "owner-1"}


async def authorize(client: Client, **fields: Any) -> dict[str, Any]:
    reply = await client.request(subjects.query("membership", "authorize"), fields)
    assert reply["ok"], reply
    return reply["result"]


async def org_with_a_member_and_key(client: Client) -> tuple[str, str, str]:
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    invited = await client.command(
        "invite_member", org_id=org_id, actor=OWNER, email="dev@acme.io", role="admin", accept_charge_cents=10**6
    )
    assert invited["ok"], invited
    key = await client.command(
        "create_api_key", org_id=org_id, actor=OWNER, name="gw", permissions=["gateway:use", "members:invite"]
    )
    assert key["ok"], key
    return org_id, key["result"]["key_id"], key["result"]["secret"]


async def test_authorize_reads_its_own_writes_after_revoke_and_change_role(membership, nc):
    client = Client(nc)
    org_id, key_id, secret = await org_with_a_member_and_key(client)
    assert (await authorize(client, api_key=secret, permission="gateway:use"))["allowed"] is True
    assert (await authorize(client, org_id=org_id, user_id="owner-1", permission="billing:manage"))["allowed"] is True

    second_owner = await client.command(
        "create_api_key", org_id=org_id, actor=OWNER, name="x", permissions=["gateway:use"], owner_user_id="owner-1"
    )
    revoked = await client.command("revoke_api_key", org_id=org_id, actor=OWNER, key_id=key_id)
    assert revoked["ok"], revoked
    # one instance: the reply came from the one answering authorize, which applied the revocation first
    assert await authorize(client, api_key=secret, permission="gateway:use") == {
        "allowed": False,
        "org_id": org_id,
        "principal": None,
        "role": None,
        "permissions": [],
        "projects": None,
    }
    owned = await authorize(client, api_key=second_owner["result"]["secret"], permission="gateway:use")
    assert owned["allowed"] is True and owned["role"] == "owner"
    assert (await authorize(client, api_key="tmk_nope.nope.nope", permission="gateway:use"))["org_id"] is None


async def test_another_instance_index_follows_the_stream(membership, nc, database_url):
    """A second instance's index, as bootstrap builds it: position, store, then the stream."""
    client = Client(nc)
    org_id, key_id, secret = await org_with_a_member_and_key(client)
    app = MembershipApplication(SystemClock(), Secrets("unused"), env=postgres_env(database_url, pool_size=2))
    js = nc.jetstream()
    start = await stream_position(js)
    index = AccessIndex(app.clock.now)
    await asyncio.to_thread(index.load, app)
    follower = asyncio.create_task(IndexFollower(index, app, js, start + 1).run())
    try:
        assert index.authorize_key(secret, "gateway:use")["allowed"] is True
        for n in range(3):
            extra = await client.command("create_api_key", org_id=org_id, actor=OWNER, name=f"k{n}", permissions=["gateway:use"])
            assert extra["ok"]
        assert (await client.command("revoke_api_key", org_id=org_id, actor=OWNER, key_id=key_id))["ok"]

        async def denied() -> bool:
            return not index.authorize_key(secret, "gateway:use")["allowed"]

        assert await eventually(denied)
        rebuilt = AccessIndex(app.clock.now)
        await asyncio.to_thread(rebuilt.load, app)
        assert index.state() == rebuilt.state()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        app.close()


async def test_the_embedded_authorizer_follows_the_bucket_and_fails_closed(membership, nc):
    client = Client(nc)
    org_id, key_id, secret = await org_with_a_member_and_key(client)

    async def bucket_ready() -> Authorizer | None:
        with contextlib.suppress(Exception):
            candidate = await Authorizer.start(nc, max_staleness=2.0)
            if candidate.check_key(secret, "gateway:use").allowed:
                return candidate
            await candidate.stop()
        return None

    authz = await eventually(bucket_ready)
    assert authz is not None
    try:
        assert authz.staleness() < 2.0
        assert authz.check_key(secret, "billing:manage").reason == "not_permitted"
        assert authz.check_user(org_id, "owner-1", "billing:manage").allowed is True
        assert authz.check_user(org_id, "nobody", "org:read").reason == "not_a_member"

        assert (await client.command("revoke_api_key", org_id=org_id, actor=OWNER, key_id=key_id))["ok"]

        async def revoked() -> bool:
            return authz.check_key(secret, "gateway:use").reason == "revoked"

        assert await eventually(revoked, timeout=authz.max_staleness)

        membership.kill()  # the writer is gone: no more heartbeats

        async def stale() -> bool:
            return authz.check_user(org_id, "owner-1", "org:read").reason == "stale"

        assert await eventually(stale, timeout=authz.max_staleness)  # its last heartbeat came before the kill
        assert authz.staleness() > 2.0
    finally:
        await authz.stop()


async def test_a_users_organizations_on_the_bus(membership, nc):
    client = Client(nc)
    org_id, _, _ = await org_with_a_member_and_key(client)
    other = await client.command(
        "create_organization", name="Beta", plan="free", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    listed = await client.query("membership", "user_orgs", user_id="owner-1", limit=1000)
    assert listed["ok"], listed
    mine = [(o["org_id"], o["org_name"], o["role"]) for o in listed["result"]["orgs"]]
    assert (org_id, "Acme", "owner") in mine and (other["result"]["org_id"], "Beta", "owner") in mine
    assert mine.index((org_id, "Acme", "owner")) < mine.index((other["result"]["org_id"], "Beta", "owner"))

    nobody = await client.query("membership", "user_orgs", user_id="nobody-at-all")
    assert nobody == {"ok": True, "result": {"orgs": [], "next_cursor": None}, "events": []}
    forged = await client.query("membership", "user_orgs", user_id="owner-1", cursor="bm90LWEtY3Vyc29y")
    assert forged["ok"] is False and forged["error"]["code"] == "validation_error"


async def test_a_role_update_reaches_authorize_and_the_embedded_replica(membership, nc):
    """A custom role loses a permission: its holder and the key they own lose it on the service at once
    (read your writes), and on the gateway's replica once the bucket carries it (a key never outranks its owner)."""
    from datetime import datetime

    from shared.invitations import invitation_token

    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="enterprise", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    role = {"role_key": "billing-manager", "name": "Billing manager"}
    defined = await client.command(
        "define_role",
        org_id=org_id,
        actor=OWNER,
        **role,
        permissions=["billing:manage", "billing:read", "api_keys:own", "gateway:use"],
    )
    assert defined["ok"], defined
    invited = await client.command(
        "invite_member", org_id=org_id, actor=OWNER, email="b@acme.io", role="billing-manager", accept_charge_cents=10**6
    )
    assert invited["ok"], invited
    invitation_id = invited["result"]["invitation_id"]
    expires_at = datetime.fromisoformat(invited["result"]["expires_at"].replace("Z", "+00:00"))
    token = invitation_token(membership.env["SERVER_SECRET"], invitation_id, expires_at)
    member = {"type": "user", "id": "bea"}
    accepted = await client.command(
        "accept_invitation", org_id=org_id, actor=member, invitation_id=invitation_id, token=token, user_id="bea"
    )
    assert accepted["ok"] and accepted["result"]["role"] == "billing-manager", accepted
    key = await client.command(
        "create_api_key",
        org_id=org_id,
        actor=member,
        name="ci",
        permissions=["billing:manage", "gateway:use"],
        owner_user_id="bea",
    )
    assert key["ok"], key
    secret = key["result"]["secret"]
    assert (await authorize(client, api_key=secret, permission="billing:manage"))["allowed"] is True
    authz = await eventually(lambda: _replica_with(nc, secret))
    assert authz is not None
    try:
        assert authz.check_key(secret, "billing:manage").allowed is True
        assert authz.check_user(org_id, "bea", "billing:manage").allowed is True

        updated = await client.command(
            "update_role",
            org_id=org_id,
            actor=OWNER,
            role_key="billing-manager",
            permissions=["billing:read", "api_keys:own", "gateway:use"],
        )
        assert updated["ok"], updated
        assert (await authorize(client, org_id=org_id, user_id="bea", permission="billing:manage"))["allowed"] is False
        on_the_service = await authorize(client, api_key=secret, permission="billing:manage")
        assert (on_the_service["allowed"], on_the_service["role"], on_the_service["permissions"]) == (
            False,
            "billing-manager",
            ["gateway:use"],
        )

        async def replica_follows() -> bool:
            return (
                authz.check_key(secret, "billing:manage").reason == "not_permitted"
                and not authz.check_user(org_id, "bea", "billing:manage").allowed
            )

        assert await eventually(replica_follows, timeout=authz.max_staleness)  # follows within its stated staleness
        assert authz.check_key(secret, "gateway:use").allowed is True
        assert authz.check_user(org_id, "bea", "billing:read").role == "billing-manager"
    finally:
        await authz.stop()


async def _replica_with(nc: Any, secret: str) -> Authorizer | None:
    with contextlib.suppress(Exception):
        candidate = await Authorizer.start(nc, max_staleness=5.0)
        if candidate.check_key(secret, "gateway:use").allowed:
            return candidate
        await candidate.stop()
    return None


async def test_project_scopes_hold_on_the_service_and_the_embedded_replica(membership, nc):
    """A key scoped to one project reaches only it, on the service and on the gateway's replica;
    narrowing its owner's scope narrows the key on both (a key never reaches beyond its owner)."""
    from datetime import datetime

    from shared.invitations import invitation_token

    client = Client(nc)
    created = await client.command(
        "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    org_id = created["result"]["org_id"]
    invited = await client.command(
        "invite_member",
        org_id=org_id,
        actor=OWNER,
        email="d@acme.io",
        role="developer",
        projects=["web", "api"],
        accept_charge_cents=10**6,
    )
    assert invited["ok"], invited
    invitation_id = invited["result"]["invitation_id"]
    expires_at = datetime.fromisoformat(invited["result"]["expires_at"].replace("Z", "+00:00"))
    token = invitation_token(membership.env["SERVER_SECRET"], invitation_id, expires_at)
    dev = {"type": "user", "id": "dana"}
    accepted = await client.command(
        "accept_invitation", org_id=org_id, actor=dev, invitation_id=invitation_id, token=token, user_id="dana"
    )
    assert accepted["ok"], accepted
    unscoped = await client.command(
        "create_api_key", org_id=org_id, actor=dev, name="all", permissions=["gateway:use"], owner_user_id="dana"
    )
    assert unscoped["error"]["code"] == "permission_denied", unscoped  # beyond her own projects
    key = await client.command(
        "create_api_key",
        org_id=org_id,
        actor=dev,
        name="web-ci",
        permissions=["gateway:use", "api_keys:read"],
        owner_user_id="dana",
        projects=["web", "api"],
    )
    assert key["ok"] and key["result"]["projects"] == ["api", "web"], key
    secret = key["result"]["secret"]

    on_the_service = await authorize(client, api_key=secret, permission="gateway:use", project_id="web")
    assert (on_the_service["allowed"], on_the_service["projects"]) == (True, ["api", "web"])
    assert (await authorize(client, api_key=secret, permission="gateway:use", project_id="ml"))["allowed"] is False
    assert (await authorize(client, api_key=secret, permission="gateway:use"))["allowed"] is False
    assert (await authorize(client, api_key=secret, permission="api_keys:read"))["allowed"] is True
    as_member = await authorize(client, org_id=org_id, user_id="dana", permission="projects:use", project_id="ml")
    assert (as_member["allowed"], as_member["projects"]) == (False, ["api", "web"])

    authz = await eventually(lambda: _replica_reaching(nc, secret, "web"))
    assert authz is not None
    try:
        assert authz.check_key(secret, "gateway:use", project_id="ml").reason == "outside_projects"
        assert authz.check_key(secret, "gateway:use").reason == "outside_projects"
        assert authz.check_key(secret, "api_keys:read").allowed is True
        assert authz.check_user(org_id, "dana", "projects:use", project_id="api").allowed is True
        assert authz.check_user(org_id, "dana", "projects:use", project_id="ml").reason == "outside_projects"
        assert authz.check_user(org_id, "owner-1", "projects:use", project_id="ml").allowed is True

        narrowed = await client.command(
            "change_role", org_id=org_id, actor=OWNER, user_id="dana", role="developer", projects=["api"]
        )
        assert narrowed["ok"], narrowed
        after = await authorize(client, api_key=secret, permission="gateway:use", project_id="web")
        assert (after["allowed"], after["projects"]) == (False, ["api"])

        async def replica_follows() -> bool:
            return (
                authz.check_key(secret, "gateway:use", project_id="web").reason == "outside_projects"
                and authz.check_user(org_id, "dana", "projects:use", project_id="web").reason == "outside_projects"
            )

        assert await eventually(replica_follows, timeout=authz.max_staleness)  # follows within its stated staleness
        assert authz.check_key(secret, "gateway:use", project_id="api").allowed is True
        assert authz.check_key(secret, "gateway:use", project_id="api").projects == ("api",)
    finally:
        await authz.stop()


async def _replica_reaching(nc: Any, secret: str, project_id: str) -> Authorizer | None:
    with contextlib.suppress(Exception):
        candidate = await Authorizer.start(nc, max_staleness=5.0)
        if candidate.check_key(secret, "gateway:use", project_id=project_id).allowed:
            return candidate
        await candidate.stop()
    return None
