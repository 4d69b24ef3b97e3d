"""Builders for unit tests: a membership application on the in-memory store, a fixed clock,
deterministic ids, and organizations set up through real commands only."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.membership.access_index import AccessIndex
from services.membership.application import MembershipApplication
from services.membership.runner import CommandRunner
from services.membership.secrets import Secrets, parse_api_key
from shared.clock import FixedClock
from shared.contract import commands as cmd
from shared.contract.replies import Reply

UTC = UTC
# A Sunday morning in a 31-day billing period (Mar 10 -> Apr 10, 2024).
T0 = datetime(2024, 3, 10, 9, 30, tzinfo=UTC)
SERVER_SECRET = "unit-test-server-secret-of-at-least-32-characters"

SYSTEM: dict[str, str] = {"type": "system", "id": "platform"}


def user(user_id: str) -> dict[str, str]:
    return {"type": "user", "id": user_id}


def api_key(key_id: str) -> dict[str, str]:
    return {"type": "api_key", "id": key_id}


def email_of(user_id: str) -> str:
    return f"{user_id}@example.com"


class CountingIds:
    """new_id for the application: `<prefix>_<n>`, predictable in assertions."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counter)}"


@dataclass
class World:
    """One application, one clock, and the organization under test.

    Commands go through the production runner (`CommandRunner.run`), with a direct save as its
    record strategy instead of the group commit, and the snapshot it takes after each reply."""

    app: MembershipApplication
    clock: FixedClock
    secrets: Secrets
    runner: CommandRunner
    loop: asyncio.Runner
    index: AccessIndex
    org_id: str = ""
    owner_id: str = "owner1"
    keys: dict[str, str] = field(default_factory=dict)  # key name -> key_id
    key_secrets: dict[str, str] = field(default_factory=dict)  # key_id -> secret
    invitations: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> invite result
    _command_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- commands ----------------------------------------------------------

    def command(self, name: str, actor: dict[str, str], /, command_id: str | None = None, **fields: Any) -> cmd.Command:
        body: dict[str, Any] = {"command_id": command_id or f"cmd-{next(self._command_ids)}", "actor": actor, **fields}
        if name != "create_organization" or "org_id" in fields:
            body.setdefault("org_id", self.org_id)
        return msgspec.convert(body, cmd.COMMANDS[name])

    def run(self, name: str, actor: dict[str, str], /, command_id: str | None = None, **fields: Any) -> Reply:
        return self.execute(name, self.command(name, actor, command_id, **fields))

    def execute(self, name: str, command: cmd.Command) -> Reply:
        return self.loop.run(self._run_settled(name, command))

    async def _run_settled(self, name: str, command: cmd.Command) -> Reply:
        reply = await self.runner.run(name, command)
        await self.runner.settled()
        return reply

    def ok(self, name: str, actor: dict[str, str], /, **fields: Any) -> dict[str, Any]:
        reply = self.run(name, actor, **fields)
        assert reply.ok, f"{name} by {actor} failed: {reply.error}"
        return reply.result

    # -- members and invitations -------------------------------------------

    def token(self, invitation_id: str, expires_at: datetime) -> str:
        return self.secrets.invitation_token(invitation_id, expires_at)

    def invite(self, email: str, role: str = "developer", by: dict[str, str] = SYSTEM, **fields: Any) -> dict[str, Any]:
        result = self.ok("invite_member", by, email=email, role=role, **fields)
        self.invitations[email] = result
        return result

    def accept(self, invitation: dict[str, Any], user_id: str, token: str | None = None) -> Reply:
        return self.run(
            "accept_invitation",
            user(user_id),
            invitation_id=invitation["invitation_id"],
            token=token or self.token(invitation["invitation_id"], invitation["expires_at"]),
            user_id=user_id,
        )

    def add_member(self, user_id: str, role: str) -> str:
        """Invites (buying a seat through the platform actor when needed) and accepts."""
        invitation = self.invite(email_of(user_id), role, accept_charge_cents=1_000_000)
        reply = self.accept(invitation, user_id)
        assert reply.ok, reply.error
        return user_id

    def role_of(self, user_id: str) -> str | None:
        member = self.app.organization(self.org_id).members.get(user_id)
        return member.role if member else None

    # -- API keys ------------------------------------------------------------

    def create_key(
        self,
        name: str,
        permissions: list[str],
        by: dict[str, str] | None = None,
        owner_user_id: str | None = None,
        **fields: Any,
    ) -> str:
        result = self.ok(
            "create_api_key",
            by or user(self.owner_id),
            name=name,
            permissions=permissions,
            **({"owner_user_id": owner_user_id} if owner_user_id else {}),
            **fields,
        )
        self.keys[name] = result["key_id"]
        self.key_secrets[result["key_id"]] = result["secret"]
        return result["key_id"]

    def authorize_key(self, key_id: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        secret = self.key_secrets[key_id]
        named = parse_api_key(secret)
        assert named is not None
        answer = self.app.authorize_key(named, secret, permission, project_id)
        assert self.index.authorize_key(secret, permission, project_id) == answer  # the access index agrees with the store
        return answer

    def authorize_user(self, user_id: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        answer = self.app.authorize_user(self.org_id, user_id, permission, project_id)
        assert self.index.authorize_user(self.org_id, user_id, permission, project_id) == answer
        return answer

    # -- the record ------------------------------------------------------------

    def recorded(self) -> list[Any]:
        notifications = self.app.recorder.select_notifications(1, 100_000)
        return [self.app.mapper.to_domain_event(n) for n in notifications]

    def count_recorded(self) -> int:
        return len(self.app.recorder.select_notifications(1, 100_000))

    def events_of(self, reply: Reply) -> list[Any]:
        by_id = {event.event_id: event for event in self.recorded()}
        return [by_id[event_id] for event_id in reply.events or []]

    def event_types_of(self, reply: Reply) -> list[str]:
        return [type(event).__name__ for event in self.events_of(reply)]

    def quote(self) -> dict[str, Any]:
        return self.app.seat_quote(self.org_id)


def wire(reply: Reply) -> bytes:
    """A reply as it goes on the bus: a first reply and its repeat are compared so."""
    return msgspec.json.encode(reply)


def new_app(start: datetime = T0, app: MembershipApplication | None = None, clock: FixedClock | None = None) -> World:
    clock = clock or FixedClock(start)
    secrets = Secrets(SERVER_SECRET)
    app = app or MembershipApplication(clock, secrets, new_id=CountingIds())
    index = AccessIndex(clock.now)
    index.load(app)  # an application given may hold events already
    runner = CommandRunner(app, saved=index.adopt)
    return World(app=app, clock=clock, secrets=secrets, runner=runner, loop=asyncio.Runner(), index=index)


def new_org(plan: str = "pro", start: datetime = T0, org_id: str = "acme", owner_id: str = "owner1") -> World:
    """An organization with one owner, created by the platform."""
    world = new_app(start)
    result = world.ok(
        "create_organization",
        SYSTEM,
        org_id=org_id,
        name="Acme",
        plan=plan,
        owner={"user_id": owner_id, "email": email_of(owner_id)},
    )
    world.org_id = result["org_id"]
    world.owner_id = owner_id
    return world


def full_org() -> World:
    """A pro organization with members of every role, a pending invitation, one free seat, and keys.

    members: owner1, owner2 (owners), admin1 (admin), dev1, dev2 (developers)
    pending invitation: pending@example.com (developer)
    seats: 3 included + 4 purchased = 7; used 6 (5 members + 1 invitation); 1 available
    member keys, one per member, owned by that member: "own:<user_id>"
    """
    world = new_org("pro")
    world.add_member("owner2", "owner")
    world.add_member("admin1", "admin")
    world.add_member("dev1", "developer")
    world.add_member("dev2", "developer")
    world.invite("pending@example.com", "developer", accept_charge_cents=1_000_000)
    purchased = world.app.organization(world.org_id).seats_purchased
    if 7 - 3 - purchased:
        world.ok("add_seats", SYSTEM, quantity=7 - 3 - purchased, accept_charge_cents=1_000_000)
    for member in ("owner1", "owner2", "admin1", "dev1", "dev2"):
        world.create_key(f"own:{member}", ["api_keys:read"], by=user(member), owner_user_id=member)
    quote = world.quote()
    assert (quote["seats_total"], quote["seats_used"]) == (7, 6), quote
    return world
