"""Issue #9: a stateful property test of the membership domain against a hostile caller.

Hypothesis drives one organization through every command of the contract, as every kind of
principal (owner, admin, developer, a non-member, a removed member, live, low, revoked, expired,
orphaned and key-minted API keys, `scim`, `system`), while the clock passes invitation expiries,
period starts and the idempotency window, the cache is evicted, and earlier `command_id`s come
back with the same or another actor or body. Commands go through the production path: the
endpoint's handler (strict decoding, one encoded reply), the command runner with the group
commit as its record strategy, and the snapshot after the reply, every SNAPSHOT_EVERY events.

After every step the invariants below are checked against the contract's rules as restated in
`contract_rules.py`. Seats used never exceed seats total, with no exception: every command that
adds usage (invite, resend of a lapsed invitation) or removes seats (remove_seats, a move to
free) checks for room, accepting an invitation moves its seat to the member, time only lets
invitations lapse, and plan changes between paid plans keep the 3 included seats.

Saves that fail (the store lost) and two copies of one command at once are in the mix too.

`PROPERTY_PROFILE=long` (`make test-property-long`) runs many more and longer examples.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
import structlog
from eventsourcing.application import Repository, project_aggregate
from eventsourcing.persistence import OperationalError
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

import services.membership.application as membership_application
from services.billing import ledger
from services.membership.access_index import AccessIndex
from services.membership.application import MembershipApplication
from services.membership.domain.organization import Organization, org_uuid
from services.membership.handlers import MembershipHandlers
from services.membership.publication import envelope_of
from services.membership.secrets import KeyName, Secrets
from shared import pricing
from shared.clock import FixedClock
from shared.contract.commands import COMMANDS, RemoveMember
from shared.contract.common import PERMISSIONS, PLANS, ROLES
from shared.contract.events import Envelope, decode_envelope
from shared.contract.replies import Reply
from tests.unit.builders import SERVER_SECRET, SYSTEM, T0, CountingIds, World, api_key, email_of, user

from . import contract_rules as rules

pytestmark = pytest.mark.unit

# No example database (a run depends on its seed alone), and no explain phase (its tracing makes shrinking crawl).
_COMMON = {
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
}
settings.register_profile("membership-ci", max_examples=150, stateful_step_count=60, **_COMMON)
settings.register_profile("membership-long", max_examples=1000, stateful_step_count=80, **_COMMON)
PROFILE = "membership-" + os.environ.get("PROPERTY_PROFILE", "ci")

SNAPSHOT_EVERY = 5  # events, instead of 200, so that examples reload from snapshots often
ORG = "acme"
FOUNDER = "u1"
USERS = ("u1", "u2", "u3", "u4", "u5", "stranger")
SCIM = {"type": "scim", "id": "okta"}
EMAILS = (*(email_of(u) for u in USERS), "guest@example.com", "U3@Example.COM", " u4@example.com ")
PERMISSION_SETS = (
    ["gateway:use"],
    ["org:read", "gateway:use"],
    ["api_keys:manage"],
    ["api_keys:own", "api_keys:read"],
    ["members:invite", "members:manage"],
    ["members:invite", "members:manage", "owners:manage", "api_keys:manage", "billing:manage"],
    sorted(rules.ALL_PERMISSIONS),
)
# Who acts, weighted towards principals that can do something, so that examples build up state.
PRINCIPAL_KINDS = (
    *["owner"] * 5, *["admin"] * 3, *["developer"] * 2, *["system"] * 3, *["key_live"] * 3, *["scim"] * 2,
    *["custom_role"] * 3, "non_member", "removed_member", "key_low", "key_by_key", "key_revoked", "key_expired", "key_orphaned",
)  # fmt: skip
# Custom role keys (enterprise): defined, updated, deleted and assigned by the rules; "ghost" is never defined.
CUSTOM_ROLE_KEYS = ("billing-viewer", "ops", "ghost")
ASSIGNABLE_ROLES = (*ROLES, *CUSTOM_ROLE_KEYS)
ROLE_PERMISSION_SETS = (
    ["billing:read", "org:read"],
    ["billing:manage", "billing:read"],
    ["members:invite", "members:manage", "api_keys:manage", "gateway:use"],
    ["members:invite", "members:manage", "members:read", "org:read"],  # a people manager: may it mint admins?
    ["gateway:use", "api_keys:own"],
    [],
)
# Project scopes (v1.4): drawn from a few gateway projects; "elsewhere" is in no scope ever given.
PROJECTS = ("web", "api", "ml")
SCOPES = st.none() | st.lists(st.sampled_from(PROJECTS), min_size=1, max_size=3, unique=True)
REPEAT_VARIANTS = ("same", "same_other_correlation", "other_actor", "other_body", "other_command")
ActorBody = dict[str, str]
UTC_TIMESTAMP = re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?([^"]*)"')
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Remembered:
    """What the model knows of a command record: the command it binds, its reply, and when."""

    command: Any  # (name, decoded command without command_id and correlation_id)
    wire: bytes
    at: datetime


class MembershipMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        clock = FixedClock(T0)
        secrets = Secrets(SERVER_SECRET)
        app = MembershipApplication(clock, secrets, new_id=CountingIds())
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="property")
        index = AccessIndex(clock.now)
        index.load(app)
        self.endpoints = MembershipHandlers(app, self.executor, index)  # the production composition, less NATS
        self.world = World(
            app, clock, secrets, self.endpoints.runner, asyncio.Runner(), index=index, org_id=ORG, owner_id=FOUNDER
        )
        self.app, self.clock = app, clock
        self.handlers = {name: self.endpoints.command_handler(name) for name in COMMANDS}
        self.records: dict[str, Remembered] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.expected_events = 0
        self.ever_members: set[str] = set()
        self.events: list[Any] = []
        self.checked_snapshots: set[int] = set()
        self.reuse_conflict: bytes | None = None
        self.command_numbers = itertools.count(1)
        self.saves_fail = False

    def teardown(self) -> None:
        self.world.loop.close()
        self.executor.shutdown(wait=True)
        self.app.close()

    # -- the organization, as the application holds it -----------------------------------

    @property
    def org(self) -> Organization:
        return self.app.organization(ORG)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def recorded_events(self) -> list[Any]:
        """Every stored event, in order; only the new ones are read each time."""
        new = self.app.recorder.select_notifications(len(self.events) + 1, 100_000)
        self.events += [self.app.mapper.to_domain_event(n) for n in new]
        return self.events

    # -- sending commands ------------------------------------------------------------------

    def execute(self, name: str, actor: ActorBody, /, correlation_id: str | None = None, copies: int = 1, **fields: Any) -> Reply:
        body = {"command_id": f"cmd-{next(self.command_numbers)}", "org_id": ORG, "actor": dict(actor), **fields}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        return self.send(name, body, copies)

    def send(self, name: str, body: dict[str, Any], copies: int = 1) -> Reply:
        """Sends the command through the endpoint (`copies` at once) and checks what the contract says of the reply."""
        raw = _encoder.encode(body)
        try:
            command = msgspec.json.decode(raw, type=COMMANDS[name])
        except msgspec.ValidationError:
            command = None
        events_before = len(self.recorded_events())
        before = copy.deepcopy(self.org) if events_before else None  # None: the organization is yet to be created
        now = self.now
        wires = self.world.loop.run(self._handle(name, raw, copies))
        assert all(w == wires[0] for w in wires), "copies of one command sent at once got different replies"
        wire = wires[0]
        reply = msgspec.json.decode(wire, type=Reply)
        new_events = self.recorded_events()[events_before:]
        self.sent.append((name, body))
        event(f"{name}: {'ok' if reply.ok else reply.error.code}")  # type: ignore[union-attr]

        assert reply.error is None or reply.error.code != "internal" or self.saves_fail, reply.error
        self._check_timestamps_are_utc(wire)
        if name != "create_api_key":
            self._check_reveals_no_secret(wire)
        if command is None:
            assert reply.error is not None and reply.error.code == "validation_error", reply
            assert not new_events
            return reply

        identity = (name, msgspec.structs.replace(command, command_id="-", correlation_id=None))
        earlier = self.records.get(command.command_id)
        if earlier is not None and earlier.at >= now - rules.COMMAND_RETENTION:
            self._check_repeat(earlier, identity, wire, reply, new_events)
            return reply

        if reply.ok:
            assert [e.event_id for e in new_events] == reply.events, "a success's events are the ones it saved"
            self.expected_events += len(new_events)
            if before is not None:
                why = rules.unauthorized_success(name, command, before, now, [type(e).__name__ for e in new_events])
                assert why is None, f"{name} by {body['actor']} succeeded: {why}"
            if isinstance(command, RemoveMember) and before is not None:
                why = rules.removal_revokes_wrongly(before, command, reply.result["revoked_api_keys"], now)
                assert why is None, why
                assert all(self.org.api_keys[k].revoked for k in reply.result["revoked_api_keys"])
            if name == "create_api_key":
                self.world.key_secrets[reply.result["key_id"]] = reply.result["secret"]
        else:
            assert reply.result is None and not reply.events and not new_events, reply
        if reply.ok or reply.error.code not in rules.NOT_REMEMBERED:  # type: ignore[union-attr]
            self.records[command.command_id] = Remembered(identity, wire, now)
        self.ever_members |= set(self.org.members)
        return reply

    async def _handle(self, name: str, raw: bytes, copies: int) -> list[bytes]:
        wires = await asyncio.gather(*(self.handlers[name](raw) for _ in range(copies)))
        await self.endpoints.runner.settled()  # the snapshot taken after the reply
        return wires

    def _check_repeat(self, earlier: Remembered, identity: Any, wire: bytes, reply: Reply, new_events: list[Any]) -> None:
        assert not new_events, "a repeated command_id recorded events"
        if identity == earlier.command:
            assert wire == earlier.wire, "a true repeat must get the first reply"
            return
        assert reply.error is not None and reply.error.code == "conflict", reply
        assert reply.error.details == {"reason": "command_id_reused"}, reply.error
        assert reply.result is None and reply.events is None, "a reused command_id revealed the first reply"
        self._check_reveals_no_secret(wire)
        first = msgspec.json.decode(earlier.wire, type=Reply)
        for value in (first.result or {}).values() if isinstance(first.result, dict) else ():
            assert not isinstance(value, str) or value.encode() not in wire, f"a reused command_id revealed {value!r}"
        self.reuse_conflict = self.reuse_conflict or wire
        assert wire == self.reuse_conflict, "every reuse gets the same answer, whatever the first reply was"

    def _check_reveals_no_secret(self, wire: bytes) -> None:
        for secret in self.world.key_secrets.values():
            assert secret.encode() not in wire, "a reply carried an API key secret it should not"

    @staticmethod
    def _check_timestamps_are_utc(encoded: bytes) -> None:
        offsets = {m.group(1) for m in UTC_TIMESTAMP.finditer(encoded)}
        assert offsets <= {b"Z"}, f"a timestamp not in UTC: {offsets}"

    # -- choosing who acts and on what ---------------------------------------------------

    def principals(self, kind: str) -> list[dict[str, str]]:
        org, now = self.org, self.now
        members = org.members
        if kind in ROLES:
            return [user(uid) for uid, m in members.items() if m.role == kind]
        if kind == "custom_role":
            return [user(uid) for uid, m in members.items() if m.role not in ROLES]
        if kind == "non_member":
            return [user(uid) for uid in USERS if uid not in self.ever_members]
        if kind == "removed_member":
            return [user(uid) for uid in sorted(self.ever_members - set(members))]
        if kind == "scim":
            return [SCIM]
        if kind == "system":
            return [SYSTEM]
        keys = list(org.api_keys.values())

        def expired(k: Any) -> bool:
            return k.expires_at is not None and now >= k.expires_at

        def orphaned(k: Any) -> bool:
            return k.owner_user_id is not None and k.owner_user_id not in members

        chosen = {
            "key_live": [k for k in keys if not k.revoked and not expired(k) and not orphaned(k)],
            "key_low": [k for k in keys if not k.revoked and not expired(k) and len(k.permissions) <= 2],
            "key_by_key": [k for k in keys if k.created_by is not None and k.created_by.type == "api_key"],
            "key_revoked": [k for k in keys if k.revoked],
            "key_expired": [k for k in keys if not k.revoked and expired(k)],
            "key_orphaned": [k for k in keys if not k.revoked and orphaned(k)],
        }[kind]
        return [api_key(k.key_id) for k in chosen]

    def draw_actor(self, data: st.DataObject) -> dict[str, str]:
        kind = data.draw(st.sampled_from(PRINCIPAL_KINDS), label="principal")
        candidates = self.principals(kind) or self.principals("owner")  # none of that kind yet
        return data.draw(st.sampled_from(candidates), label=kind)

    def draw_user_id(self, data: st.DataObject) -> str:
        """A member more often than not."""
        return data.draw(st.sampled_from(sorted(self.org.members)) | st.sampled_from(USERS), label="user_id")

    def invitation_ids(self) -> list[str]:
        return [*self.org.invitations, "inv_missing"]

    def key_ids(self) -> list[str]:
        return [*self.org.api_keys, "key_missing"]

    # -- the fields of each command --------------------------------------------------------

    def fields_of(self, name: str, data: st.DataObject, actor: ActorBody | None = None) -> dict[str, Any]:
        """A body for the command, mostly about things that exist; `actor` when it is already chosen."""
        return getattr(self, f"_{name}_fields")(data, actor)

    def _create_organization_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        owner = data.draw(st.sampled_from(USERS))
        return {
            "name": "Acme again",
            "plan": data.draw(st.sampled_from(PLANS)),
            "owner": {"user_id": owner, "email": email_of(owner)},
        }

    def _change_plan_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {"plan": data.draw(st.sampled_from(PLANS))}

    def _invite_member_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        invitations = self.org.invitations.values()
        invited = sorted({i.email for i in invitations})
        lapsed = sorted({i.email for i in invitations if i.has_lapsed(self.now)})
        choice = st.sampled_from(EMAILS) | st.sampled_from(invited or EMAILS) | st.sampled_from(lapsed or EMAILS)
        email = data.draw(choice, label="email")
        fields = {"email": email, "role": data.draw(st.sampled_from(ASSIGNABLE_ROLES))}
        charge = data.draw(st.sampled_from([None, 10**6, 10**6, 0]), label="accept_charge_cents")
        projects = data.draw(SCOPES, label="projects")
        if projects is not None:
            fields["projects"] = projects
        return fields if charge is None else {**fields, "accept_charge_cents": charge}

    def _resend_invitation_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        invitations = self.org.invitations.values()
        unanswered = sorted(i.invitation_id for i in invitations if i.status == "pending") or self.invitation_ids()
        lapsed = sorted(i.invitation_id for i in invitations if i.has_lapsed(self.now)) or self.invitation_ids()
        choice = st.sampled_from(self.invitation_ids()) | st.sampled_from(unanswered) | st.sampled_from(lapsed)
        return {"invitation_id": data.draw(choice, label="invitation_id")}

    _revoke_invitation_fields = _resend_invitation_fields

    def _accept_invitation_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        invitation_id = data.draw(st.sampled_from(self.invitation_ids()))
        invitation = self.org.invitations.get(invitation_id)
        invitee = next((u for u in USERS if invitation is not None and email_of(u) == invitation.email), None)
        user_id = data.draw(st.sampled_from([invitee] if invitee else USERS) | st.sampled_from(USERS), label="user_id")
        expiry = invitation.expires_at if invitation else self.now
        valid = self.world.token(invitation_id, expiry)
        token = data.draw(
            st.sampled_from(
                [
                    valid,
                    valid,
                    valid,
                    self.world.token(invitation_id, expiry - timedelta(days=1)),  # as before a resend
                    "not-the-token",
                ]
            ),
            label="token",
        )
        fields = {"invitation_id": invitation_id, "token": token, "user_id": user_id}
        email = data.draw(st.sampled_from([None, email_of(user_id), invitation.email if invitation else None]), label="email")
        return fields if email is None else {**fields, "email": email}

    def _change_role_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        fields = {"user_id": self.draw_user_id(data), "role": data.draw(st.sampled_from(ASSIGNABLE_ROLES))}
        scope = data.draw(st.sampled_from(["keep", "every", "some"]), label="scope")
        if scope == "every":
            return {**fields, "every_project": True}
        if scope == "some":
            return {**fields, "projects": data.draw(SCOPES.filter(bool), label="projects")}
        return fields

    def _remove_member_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        org = self.org
        owners = {k.owner_user_id for k in org.api_keys.values()}
        creators = {k.created_by.id for k in org.api_keys.values() if k.created_by is not None}
        holders = sorted((owners | creators) & set(org.members))  # removing them must revoke their keys
        if holders and data.draw(st.booleans(), label="a key holder"):
            user_id = data.draw(st.sampled_from(holders), label="user_id")
        else:
            user_id = self.draw_user_id(data)
        fields: dict[str, Any] = {"user_id": user_id}
        keep = data.draw(st.lists(st.sampled_from(self.key_ids()), max_size=2, unique=True), label="keep_api_keys")
        return {**fields, "keep_api_keys": keep} if keep else fields

    def _add_seats_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {"quantity": data.draw(st.integers(1, 3)), "accept_charge_cents": data.draw(st.sampled_from([10**6, 10**6, 0, 1]))}

    def _remove_seats_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {"quantity": data.draw(st.integers(1, 3))}

    def _create_api_key_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        permissions = data.draw(
            st.sampled_from(PERMISSION_SETS) | st.lists(st.sampled_from(PERMISSIONS), min_size=1, max_size=4, unique=True),
            label="permissions",
        )
        fields: dict[str, Any] = {"name": data.draw(st.sampled_from(["ci", "deploy", "k"])), "permissions": permissions}
        themself = [actor["id"]] * 2 if actor is not None and actor["type"] == "user" else []
        owner = data.draw(st.sampled_from([None, None, *themself, *self.org.members, "stranger"]), label="owner_user_id")
        if owner is not None:
            fields["owner_user_id"] = owner
        projects = data.draw(SCOPES, label="projects")
        if projects is not None:
            fields["projects"] = projects
        now = self.now
        expires_at = data.draw(
            st.sampled_from(
                [
                    None,
                    now + timedelta(hours=1),
                    now + timedelta(days=8),
                    now,  # not in the future: refused, and not remembered
                    (now + timedelta(hours=3)).astimezone(timezone(timedelta(hours=2))),  # published in UTC
                ]
            ),
            label="expires_at",
        )
        return fields if expires_at is None else {**fields, "expires_at": expires_at}

    def _define_role_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {
            "role_key": data.draw(st.sampled_from(CUSTOM_ROLE_KEYS[:2]), label="role_key"),
            "name": "A role",
            "permissions": data.draw(st.sampled_from(ROLE_PERMISSION_SETS), label="permissions"),
        }

    def _update_role_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"role_key": data.draw(st.sampled_from(CUSTOM_ROLE_KEYS), label="role_key")}
        if data.draw(st.booleans(), label="new permissions"):
            fields["permissions"] = data.draw(st.sampled_from(ROLE_PERMISSION_SETS), label="permissions")
        if data.draw(st.booleans(), label="new name"):
            fields["name"] = data.draw(st.sampled_from(["A role", "Another"]), label="name")
        return fields

    def _delete_role_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {"role_key": data.draw(st.sampled_from(CUSTOM_ROLE_KEYS), label="role_key")}

    def _revoke_api_key_fields(self, data: st.DataObject, actor: ActorBody | None) -> dict[str, Any]:
        return {"key_id": data.draw(st.sampled_from(self.key_ids()))}

    def run_command(self, name: str, data: st.DataObject, copies: int = 1) -> Reply:
        actor = self.draw_actor(data)
        fields = self.fields_of(name, data, actor)
        correlation = data.draw(st.sampled_from([None, "corr-1"]), label="correlation_id")
        return self.execute(name, actor, correlation_id=correlation, copies=copies, **fields)

    # -- setup -----------------------------------------------------------------------------

    @initialize(
        plan=st.sampled_from(PLANS),
        founder_creates=st.booleans(),
        team=st.lists(
            st.tuples(st.sampled_from(("u2", "u3", "u4")), st.sampled_from(ROLES)), max_size=3, unique_by=lambda t: t[0]
        ),
        lapsed=st.booleans(),
    )
    def create_organization_and_team(self, plan: str, founder_creates: bool, team: list[tuple[str, str]], lapsed: bool) -> None:
        """An organization, perhaps with members (invited and accepted) and an invitation that lapsed unanswered."""
        creator = user(FOUNDER) if founder_creates else SYSTEM
        fields = {"name": "Acme", "plan": plan, "owner": {"user_id": FOUNDER, "email": email_of(FOUNDER)}}
        assert self.execute("create_organization", creator, **fields).ok
        if plan == "free":
            return
        for user_id, role in team:
            invited = self.execute("invite_member", SYSTEM, email=email_of(user_id), role=role, accept_charge_cents=10**6)
            assert invited.ok, invited.error
            invitation_id = invited.result["invitation_id"]
            token = self.world.token(invitation_id, self.org.invitations[invitation_id].expires_at)
            accepted = self.execute("accept_invitation", user(user_id), invitation_id=invitation_id, token=token, user_id=user_id)
            assert accepted.ok, accepted.error
        if lapsed:
            assert self.execute("invite_member", SYSTEM, email="u5@example.com", role="developer", accept_charge_cents=10**6).ok
            self.clock.advance(days=8)

    # -- every command ------------------------------------------------------------------

    @rule(data=st.data())
    def create_organization_again(self, data: st.DataObject) -> None:
        self.run_command("create_organization", data)

    @rule(data=st.data())
    def change_plan(self, data: st.DataObject) -> None:
        self.run_command("change_plan", data)

    @rule(data=st.data())
    def invite_member(self, data: st.DataObject) -> None:
        self.run_command("invite_member", data)

    @precondition(lambda self: bool(self.org.invitations))
    @rule(data=st.data())
    def resend_invitation(self, data: st.DataObject) -> None:
        self.run_command("resend_invitation", data)

    @precondition(lambda self: bool(self.org.invitations))
    @rule(data=st.data())
    def revoke_invitation(self, data: st.DataObject) -> None:
        self.run_command("revoke_invitation", data)

    @precondition(lambda self: bool(self.org.invitations))
    @rule(data=st.data(), as_the_user=st.booleans())
    def accept_invitation(self, data: st.DataObject, as_the_user: bool) -> None:
        fields = self.fields_of("accept_invitation", data)
        actor = user(fields["user_id"]) if as_the_user else self.draw_actor(data)
        self.execute("accept_invitation", actor, **fields)

    @rule(data=st.data())
    def change_role(self, data: st.DataObject) -> None:
        self.run_command("change_role", data)

    @rule(data=st.data(), by_themself=st.booleans())
    def remove_member(self, data: st.DataObject, by_themself: bool) -> None:
        fields = self.fields_of("remove_member", data)
        self.execute("remove_member", user(fields["user_id"]) if by_themself else self.draw_actor(data), **fields)

    @rule(data=st.data())
    def add_seats(self, data: st.DataObject) -> None:
        self.run_command("add_seats", data)

    @rule(data=st.data())
    def remove_seats(self, data: st.DataObject) -> None:
        self.run_command("remove_seats", data)

    @rule(data=st.data())
    def create_api_key(self, data: st.DataObject) -> None:
        self.run_command("create_api_key", data)

    @precondition(lambda self: bool(self.org.api_keys))
    @rule(data=st.data(), by_its_owner=st.booleans())
    def revoke_api_key(self, data: st.DataObject, by_its_owner: bool) -> None:
        fields = self.fields_of("revoke_api_key", data)
        key = self.org.api_keys.get(fields["key_id"])
        owner = key.owner_user_id if key is not None else None
        self.execute("revoke_api_key", user(owner) if by_its_owner and owner else self.draw_actor(data), **fields)

    @rule(data=st.data())
    def define_role(self, data: st.DataObject) -> None:
        self.run_command("define_role", data)

    @rule(data=st.data())
    def update_role(self, data: st.DataObject) -> None:
        self.run_command("update_role", data)

    @rule(data=st.data())
    def delete_role(self, data: st.DataObject) -> None:
        self.run_command("delete_role", data)

    # -- repeats, time, the cache ------------------------------------------------------

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def repeat_a_command_id(self, data: st.DataObject) -> None:
        name, body = data.draw(st.sampled_from(self.sent), label="earlier command")
        variant = data.draw(st.sampled_from(REPEAT_VARIANTS), label="variant")
        again = dict(body)
        if variant == "same_other_correlation":
            again["correlation_id"] = "corr-repeat"
        elif variant == "other_actor":
            again["actor"] = self.draw_actor(data)
        elif variant == "other_body":
            again = {**{k: body[k] for k in ("command_id", "org_id", "actor")}, **self.fields_of(name, data, body["actor"])}
        elif variant == "other_command":
            name = data.draw(st.sampled_from(sorted(COMMANDS)), label="other command")
            again = {**{k: body[k] for k in ("command_id", "org_id", "actor")}, **self.fields_of(name, data, body["actor"])}
        self.send(name, again)

    @rule(data=st.data())
    def time_passes(self, data: st.DataObject) -> None:
        now, org = self.now, self.org
        used_before = rules.seats_used(org, now)
        expiries = sorted({i.expires_at for i in org.invitations.values() if i.expires_at > now})
        period_end = pricing.billing_period(org.billing_anchor, now)[1]
        choices = {
            "minutes": now + timedelta(minutes=data.draw(st.integers(1, 90), label="minutes")),
            "window": now + rules.COMMAND_RETENTION,
            "past the window": now + rules.COMMAND_RETENTION + timedelta(microseconds=1),
            "days": now + timedelta(days=data.draw(st.integers(1, 9), label="days")),
            "period start": period_end,
            "just before the period start": max(now, period_end - timedelta(microseconds=1)),
        }
        if expiries:
            choices["an invitation expiry"] = data.draw(st.sampled_from(expiries), label="expiry")
        moment = data.draw(st.sampled_from(sorted(choices)), label="how far")
        self.clock.set(choices[moment])
        assert rules.seats_used(org, self.now) <= used_before, "time passing increased the seats used"

    @rule()
    def evict_and_reload(self) -> None:
        live = self.org
        self.app.evict(ORG)
        reloaded = self.org
        assert reloaded is not live
        assert vars(reloaded) == vars(live), "the organization reloaded from the store differs from the cached one"

    @rule(data=st.data())
    def a_save_fails(self, data: st.DataObject) -> None:
        """The store refuses the next save (a lost connection): the command gets `internal`, records
        nothing, and the organization stays as saved, in the cache and in any snapshot."""
        recorder = self.app.recorder

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise OperationalError("the connection to the store was lost")

        recorder.insert_events = refuse  # type: ignore[method-assign]
        self.saves_fail = True
        try:
            self.run_command(data.draw(st.sampled_from(sorted(COMMANDS)), label="command"), data)
        finally:
            del recorder.insert_events
            self.saves_fail = False

    @rule(data=st.data())
    def the_same_command_twice_at_once(self, data: st.DataObject) -> None:
        """Two deliveries of one request race through the runner: one decides, the other is its repeat."""
        self.run_command(data.draw(st.sampled_from(sorted(COMMANDS)), label="command"), data, copies=2)

    @rule()
    def forget_old_command_records(self) -> None:
        """The service's periodic clean-up: only records past the window go, and those are decided afresh anyway."""
        self.world.loop.run(self.endpoints.forget_old_commands())

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def one_pending_invitation_per_email_and_none_for_a_member(self) -> None:
        org, now = self.org, self.now
        pending = Counter(i.email for i in org.invitations.values() if i.status == "pending" and now < i.expires_at)
        assert all(n == 1 for n in pending.values()), f"two pending invitations for one email: {pending}"
        member_emails = {m.email for m in org.members.values()}
        assert not member_emails & set(pending), f"a member has a pending invitation: {member_emails & set(pending)}"

    @invariant()
    def member_emails_are_unique_and_an_owner_remains(self) -> None:
        members = self.org.members.values()
        emails = Counter(m.email for m in members)
        assert all(n == 1 for n in emails.values()), f"two members share an email: {emails}"
        assert any(m.role == "owner" for m in members), "the organization has no owner"

    @invariant()
    def seats_used_never_exceed_seats_total(self) -> None:
        org = self.org
        purchased = 0
        for recorded in self.recorded_events():
            name = type(recorded).__name__
            purchased += recorded.quantity if name == "SeatAdded" else -recorded.quantity if name == "SeatRemoved" else 0
        assert org.seats_purchased == purchased >= 0
        total = rules.INCLUDED_SEATS[org.plan] + purchased
        assert rules.seats_used(org, self.now) <= total, f"{rules.seats_used(org, self.now)} seats used of {total}"

    @invariant()
    def no_key_grants_more_than_its_owner_and_creator_hold(self) -> None:
        org, now = self.org, self.now
        granted = {
            key_id: frozenset(self.app.authorize_key(KeyName(ORG, key_id), secret, "org:read")["permissions"])
            for key_id, secret in self.world.key_secrets.items()
        }
        for key_id, permissions in granted.items():
            bound = rules.key_bound(org, key_id, now)
            assert permissions <= bound, f"key {key_id} grants {sorted(permissions - bound)} beyond {sorted(bound)}"
            creator = org.api_keys[key_id].created_by
            if creator is not None and creator.type == "api_key" and creator.id in granted:
                assert permissions <= granted[creator.id], f"key {key_id} outranks the key that minted it"

    @invariant()
    def a_scoped_key_never_authorizes_outside_its_projects(self) -> None:
        """Nor beyond its owner's current scope: the key's effective scope is within both, and a
        project-level permission is granted only in a project of it (never without a project)."""
        org = self.org
        for key_id in self.world.key_secrets:
            bound = rules.key_scope_bound(org, key_id)
            for project_id in (*PROJECTS, "elsewhere", None):
                decision = self.world.authorize_key(key_id, "gateway:use", project_id)  # the index agrees with the store
                stated = None if decision["projects"] is None else frozenset(decision["projects"])
                if not decision["permissions"]:
                    continue
                assert bound is None or (stated is not None and stated <= bound), (key_id, stated, bound)
                if decision["allowed"] and bound is not None:
                    assert project_id in bound, f"key {key_id} authorized in {project_id}, outside {sorted(bound)}"
                    assert project_id in (stated or ()), (key_id, project_id, stated)
            owner_id = org.api_keys[key_id].owner_user_id
            owner = org.members.get(owner_id) if owner_id else None
            if owner is not None and owner.projects is not None and decision["permissions"]:
                assert decision["projects"] is not None and set(decision["projects"]) <= owner.projects, key_id

    @invariant()
    def every_held_role_is_defined_and_custom_ones_only_on_enterprise(self) -> None:
        """A deleted role is held by no one; nothing is downgraded silently by a plan change."""
        org = self.org
        held = {m.role for m in org.members.values()} | {i.role for i in org.invitations.values() if i.status == "pending"}
        custom = held - set(ROLES)
        assert custom <= set(org.roles), f"roles held but not defined: {sorted(custom - set(org.roles))}"
        assert not custom or org.plan == "enterprise", f"custom roles {sorted(custom)} held on the {org.plan} plan"
        assert not any(r.permissions & rules.RESERVED_FOR_BUILT_IN_ROLES for r in org.roles.values())

    @invariant()
    def authorize_resolves_a_member_from_the_roles_current_definition(self) -> None:
        org = self.org
        for user_id, member in org.members.items():
            decision = self.world.authorize_user(user_id, "org:read")  # the access index agrees with the store
            assert frozenset(decision["permissions"]) == rules.role_bound(org, member.role), (user_id, member.role)

    @invariant()
    def a_reload_equals_the_live_state(self) -> None:
        live = vars(self.org)
        from_events = project_aggregate(None, self.recorded_events())
        assert vars(from_events) == live, "the organization rebuilt from its events differs from the live one"
        from_snapshot = Repository(self.app.events, snapshot_store=self.app.snapshots).get(org_uuid(ORG))
        assert vars(from_snapshot) == live, "the organization rebuilt from its snapshot differs from the live one"
        for snapshot in self.app.snapshots.get(org_uuid(ORG), gt=max(self.checked_snapshots, default=0)):
            version = snapshot.originator_version
            assert version <= len(self.events), f"a snapshot at version {version} of {len(self.events)} saved events"
            at_version = project_aggregate(None, self.events[:version])
            assert vars(snapshot.mutate(None)) == vars(at_version), (
                f"the snapshot at version {version} holds what was never saved"
            )
            self.checked_snapshots.add(version)

    @invariant()
    def only_fresh_successes_record_events(self) -> None:
        assert len(self.recorded_events()) == self.expected_events, "events were recorded by a repeat or a refusal"

    @invariant()
    def the_ledger_equals_a_plain_recomputation(self) -> None:
        envelopes = [self._published(event) for event in self.recorded_events()]
        account, charges = None, []
        for envelope in envelopes:
            entry = ledger.record(account, envelope)
            assert not entry.mismatches, entry.mismatches
            account, charges = entry.account, charges + entry.charges
        assert account is not None
        charges += ledger.charge_renewals_until(account, self.now)
        written = sorted(
            rules.Line(
                c.occurred_at,
                c.kind,
                c.quantity,
                c.unit_price_cents,
                c.amount_cents,
                c.billing_period_start,
                c.billing_period_end,
            )
            for c in charges
        )
        expected, wrong = rules.recomputed_charges(envelopes, self.now)
        assert not wrong, wrong
        assert written == expected

    def _published(self, event: Any) -> Envelope:
        """The event as billing receives it off the stream; nothing secret and every time in UTC."""
        body = _encoder.encode(envelope_of(event))
        self._check_reveals_no_secret(body)
        self._check_timestamps_are_utc(body)
        return decode_envelope(body)


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Thousands of commands: their info lines would only slow the run down."""
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.configure(**before)


def test_membership_invariants_hold_against_any_sequence_of_commands(monkeypatch: pytest.MonkeyPatch, quiet_logs: None) -> None:
    monkeypatch.setattr(membership_application, "SNAPSHOT_INTERVAL", SNAPSHOT_EVERY)
    run_state_machine_as_test(MembershipMachine, settings=settings.get_profile(PROFILE))
