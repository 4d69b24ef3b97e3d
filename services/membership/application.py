"""The membership service layer: one method per use case over the event-sourced Organization.

Synchronous (the eventsourcing library has no asyncio API); the entrypoint runs it in threads.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from shared.clock import Clock
from shared.contract import commands as cmd
from shared.contract.common import Actor
from shared.contract.replies import Reply, failure, success

from .domain.errors import Conflict, DomainError, NotFound
from .domain.organization import CommandContext, Organization, org_uuid
from .secrets import Secrets, parse_api_key, secrets_match

CONFLICT_RETRIES = 5
SNAPSHOT_INTERVAL = 200
CONCURRENT_CHANGE = failure("conflict", "the organization changed concurrently; retry the command")


@dataclass
class Decision:
    """A command's reply, and the events to save before it may be sent (none for a refusal or a repeat)."""

    org: Organization | None
    reply: Reply
    recorded: list[Any] = field(default_factory=list)


def random_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def org_id_for(command_id: str) -> str:
    """An org created without an explicit id gets one derived from the command, so a repeat finds it."""
    return "org_" + hashlib.sha256(command_id.encode()).hexdigest()[:24]


class MembershipApplication(Application):
    name = "membership"
    env = {"AGGREGATE_CACHE_MAXSIZE": "2000", "IS_SNAPSHOTTING_ENABLED": "y"}

    def __init__(
        self,
        clock: Clock,
        secrets: Secrets,
        new_id: Callable[[str], str] = random_id,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.secrets = secrets
        self.new_id = new_id

    # -- commands ---------------------------------------------------------------

    def execute(self, name: str, command: cmd.Command) -> Reply:
        """Decides and records one command; a repeat of a `command_id` gets the first reply."""
        for _ in range(CONFLICT_RETRIES):
            decision = self.decide(name, command)
            if not decision.recorded:
                return decision.reply
            try:
                self.record([decision])
                self.snapshot_if_due(decision)
                return decision.reply
            except IntegrityError:
                self.forget(decision.org)  # another instance wrote first: reload and decide again
        return CONCURRENT_CHANGE

    def decide(self, name: str, command: cmd.Command) -> Decision:
        """Checks the command against the organization; the events it would record are not saved yet."""
        ctx = CommandContext(command.actor, command.command_id, command.correlation_id, self.clock.now(), self.new_id)
        org: Organization | None = None
        try:
            if isinstance(command, cmd.CreateOrganization):
                return self._decide_creation(ctx, command)
            org = self.organization(command.org_id)
            if (outcome := org.outcome_of(command.command_id)) is not None:
                return Decision(org, self._reply(org.org_id, outcome["result"], outcome["events"]))
            result = self._decide(org, ctx, command)
        except DomainError as refused:
            if org is not None and org.pending_events:
                self.forget(org)
            return Decision(org, failure(refused.code, refused.message, refused.details))
        recorded = list(org.pending_events)
        return Decision(org, self._reply(org.org_id, result, [e.event_id for e in recorded]), recorded)

    def record(self, decisions: list[Decision]) -> None:
        """Saves the events of several decisions in one transaction (group commit)."""
        try:
            self.save(*(event for decision in decisions for event in decision.recorded))
        except BaseException:
            for decision in decisions:
                self.forget(decision.org)
            raise
        for decision in decisions:
            decision.org.collect_events()

    def snapshot_if_due(self, decision: Decision) -> None:
        """Snapshots the cached organization when the decision crossed an interval.

        Taken from memory after the save, not rebuilt from the store inside it, so that a
        snapshot never holds up the group commit."""
        if decision.org is not None and any(e.originator_version % SNAPSHOT_INTERVAL == 0 for e in decision.recorded):
            self.snapshots.put([Organization.Snapshot.take(decision.org)])

    def forget(self, org: Organization | None) -> None:
        """The cached aggregate may hold changes that were not saved: reload it next time."""
        if org is not None and self.repository.cache is not None:
            try:
                self.repository.cache.get(org.id, evict=True)
            except KeyError:
                pass

    def _decide_creation(self, ctx: CommandContext, command: cmd.CreateOrganization) -> Decision:
        org_id = command.org_id or org_id_for(command.command_id)
        try:
            existing = self.organization(org_id)
        except NotFound:
            existing = None
        if existing is not None:
            outcome = existing.outcome_of(command.command_id)
            if outcome is None:
                raise Conflict(f"organization {org_id} already exists")
            return Decision(existing, self._reply(org_id, outcome["result"], outcome["events"]))
        org = Organization.create(ctx, org_id, command.name, command.plan, command.owner.user_id, command.owner.email)
        recorded = list(org.pending_events)
        return Decision(org, self._reply(org_id, recorded[-1].result, [e.event_id for e in recorded]), recorded)

    def _decide(self, org: Organization, ctx: CommandContext, command: cmd.Command) -> dict[str, Any]:
        match command:
            case cmd.ChangePlan():
                return org.change_plan(ctx, command.plan)
            case cmd.InviteMember():
                return org.invite_member(ctx, command.email, command.role, command.accept_charge_cents)
            case cmd.ResendInvitation():
                return org.resend_invitation(ctx, command.invitation_id)
            case cmd.RevokeInvitation():
                return org.revoke_invitation(ctx, command.invitation_id)
            case cmd.AcceptInvitation():
                token = command.token
                return org.accept_invitation(
                    ctx,
                    command.invitation_id,
                    command.user_id,
                    lambda invitation_id, expires_at: self.secrets.token_matches(token, invitation_id, expires_at),
                )
            case cmd.ChangeRole():
                return org.change_role(ctx, command.user_id, command.role)
            case cmd.RemoveMember():
                return org.remove_member(ctx, command.user_id)
            case cmd.AddSeats():
                return org.add_seats(ctx, command.quantity, command.accept_charge_cents)
            case cmd.RemoveSeats():
                return org.remove_seats(ctx, command.quantity)
            case cmd.CreateApiKey():
                return org.create_api_key(
                    ctx,
                    command.name,
                    list(command.permissions),
                    command.owner_user_id,
                    command.expires_at,
                    lambda key_id: self.secrets.new_api_key(org.org_id, key_id),
                )
            case cmd.RevokeApiKey():
                return org.revoke_api_key(ctx, command.key_id)
        raise TypeError(f"no handler for {type(command).__name__}")

    def _reply(self, org_id: str, result: dict[str, Any], event_ids: list[str]) -> Reply:
        if "key_id" in result and "prefix" in result:
            result = {**result, "secret": self.secrets.api_key_secret(org_id, result["key_id"])}
        return success(result, event_ids)

    # -- queries ------------------------------------------------------------------

    def organization(self, org_id: str) -> Organization:
        """The cached aggregate itself, not a copy: callers serialize per organization."""
        try:
            return self.repository.get(org_uuid(org_id), deepcopy_from_cache=False)
        except AggregateNotFoundError:
            raise NotFound(f"organization {org_id} does not exist") from None

    def view_organization(self, org_id: str) -> dict[str, Any]:
        org = self.organization(org_id)
        now = self.clock.now()
        return {
            "org_id": org.org_id,
            "name": org.name,
            "plan": org.plan,
            "members": sorted(org.members.values(), key=lambda m: (m["joined_at"], m["user_id"])),
            "invitations": [
                {
                    "invitation_id": i["invitation_id"],
                    "email": i["email"],
                    "role": i["role"],
                    "expires_at": i["expires_at"],
                    "status": "expired" if i["status"] == "pending" and now >= i["expires_at"] else i["status"],
                }
                for i in org.invitations.values()
            ],
            "seats": org.seat_quote(now),
        }

    def seat_quote(self, org_id: str) -> dict[str, Any]:
        return self.organization(org_id).seat_quote(self.clock.now())

    def authorize_user(self, org_id: str, user_id: str, permission: str) -> dict[str, Any]:
        try:
            org = self.organization(org_id)
        except NotFound:
            return _denied()
        member = org.members.get(user_id)
        if member is None:
            return _denied(org_id)
        granted = sorted(org.permissions_of(Actor(type="user", id=user_id), self.clock.now()))
        return _decision(org_id, "user", user_id, member["role"], granted, permission)

    def authorize_key(self, secret: str, permission: str) -> dict[str, Any]:
        named = parse_api_key(secret)
        if named is None:
            return _denied()
        org_id, key_id = named
        try:
            org = self.organization(org_id)
        except NotFound:
            return _denied()
        key = org.api_keys.get(key_id)
        if key is None or not secrets_match(secret, key["secret_hash"]):
            return _denied()
        granted = sorted(org.key_permissions(key, self.clock.now()))
        if not granted:
            return _denied(org_id)
        owner = org.members.get(key["owner_user_id"]) if key["owner_user_id"] else None
        return _decision(org_id, "api_key", key_id, owner["role"] if owner else None, granted, permission)


def _denied(org_id: str | None = None) -> dict[str, Any]:
    return {"allowed": False, "org_id": org_id, "principal": None, "role": None, "permissions": []}


def _decision(org_id: str, kind: str, principal_id: str, role: str | None, granted: list[str], permission: str) -> dict[str, Any]:
    return {
        "allowed": permission in granted,
        "org_id": org_id,
        "principal": {"type": kind, "id": principal_id},
        "role": role,
        "permissions": granted,
    }
