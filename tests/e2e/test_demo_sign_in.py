"""`make run` prints a link that signs the demo owner in, after making the demo organization once."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from devstack.demo_sign_in import DEMO_EMAIL, DEMO_ORG, DEMO_OWNER, ensure_demo_organization
from services.web.signin_links import read_local_sign_in
from teamctl.client import Client
from tests.e2e.test_team_life import smtp_sink, stack  # noqa: F401  (fixtures)

LINK_LINE = re.compile(r"sign in as the demo owner .*: (?P<link>\S+)")


def printed_link(stack) -> str:  # noqa: F811
    deadline = time.monotonic() + 60
    while not (found := LINK_LINE.search(stack.output())):
        assert time.monotonic() < deadline, stack.output()[-3000:]
        time.sleep(0.2)
    return found["link"]


async def test_make_run_prints_a_sign_in_link_for_the_demo_owner(stack, nc, service_env):  # noqa: F811
    link = printed_link(stack)
    assert link.startswith("https://gateway.test/session/local?token=")
    signed = read_local_sign_in(service_env["SERVER_SECRET"], link.split("token=", 1)[1], datetime.now(UTC))
    assert (signed.user_id, signed.email, signed.next_path) == (DEMO_OWNER, DEMO_EMAIL, f"/orgs/{DEMO_ORG}/settings/team")

    client = Client(nc)
    await ensure_demo_organization(client)  # a second run finds it
    organization = await client.query("membership", "get_organization", org_id=DEMO_ORG)
    assert organization["ok"], organization
    members = await client.query("membership", "members", org_id=DEMO_ORG)
    assert [(m["user_id"], m["role"]) for m in members["result"]["members"]] == [(DEMO_OWNER, "owner")]
