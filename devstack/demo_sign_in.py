"""After READY, `make run` makes sure a demo organization exists and prints a link that signs its owner in."""

from __future__ import annotations

import shlex

import nats.errors

from devstack.service_process import console
from shared.settings import ConfigurationError
from teamctl.client import Client
from teamctl.login import sign_in_link

DEMO_ORG = "demo"
DEMO_OWNER = "demo-owner"
DEMO_EMAIL = "owner@demo.example"


async def offer_demo_sign_in(nats_url: str, environment: dict[str, str]) -> None:
    try:
        client = await Client.connect(nats_url, timeout=5.0)
    except (nats.errors.Error, OSError) as error:
        console("run", f"no demo sign-in link: cannot reach NATS ({error!r})")
        return
    try:
        await ensure_demo_organization(client)
        link = sign_in_link(DEMO_OWNER, DEMO_EMAIL, f"/orgs/{DEMO_ORG}/settings/team", environment)
    except (nats.errors.Error, TimeoutError, RuntimeError, ConfigurationError, ValueError) as error:
        console("run", f"no demo sign-in link: {error}")
        return
    finally:
        await client.close()
    console("run", f"sign in as the demo owner ({DEMO_EMAIL}; one use, five minutes): {link}")
    console("run", f"another link: {login_command(environment)}")


async def ensure_demo_organization(client: Client) -> None:
    """Creates org `demo` (owner `demo-owner`, pro plan) the first time; every later run finds it."""
    found = await client.query("membership", "get_organization", org_id=DEMO_ORG)
    if found.get("ok"):
        return
    if found["error"]["code"] != "not_found":
        raise RuntimeError(f"membership answered {found['error']['code']}")
    created = await client.command(
        "create_organization",
        org_id=DEMO_ORG,
        name="Demo",
        plan="pro",
        owner={"user_id": DEMO_OWNER, "email": DEMO_EMAIL},
    )
    if not created.get("ok"):
        raise RuntimeError(f"the demo organization could not be created: {created['error']['message']}")
    console("run", f"created the demo organization `{DEMO_ORG}`, owned by {DEMO_OWNER}")


def login_command(environment: dict[str, str]) -> str:
    """`teamctl login` for the demo owner, with what it needs to sign links as this stack does (the
    secret's file and PUBLIC_URL), so that the line works when pasted into a shell."""
    settings = [
        f"{name}={shlex.quote(environment[name])}" for name in ("SERVER_SECRET_FILE", "PUBLIC_URL") if environment.get(name)
    ]
    return " ".join([*settings, ".venv/bin/teamctl", "login", "--user", DEMO_OWNER, "--email", DEMO_EMAIL])
