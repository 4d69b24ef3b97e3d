"""The membership application: decisions over the event-sourced Organization, the store, and the read side.

Synchronous (the eventsourcing library has no asyncio API): `runner.CommandRunner` calls it from
threads, one organization at a time. A decision works on a copy of the cached organization; the
copy replaces the cached one only once its events are saved (`record`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import JSONTranscoder
from eventsourcing.popo import POPOFactory
from eventsourcing.utils import get_topic

from shared import paging, pricing
from shared.clock import Clock
from shared.contract import commands as cmd
from shared.contract import queries as q
from shared.contract.common import Actor
from shared.contract.replies import Reply, failure, success
from shared.errors import Conflict, Invalid, InvalidToken, NotFound, Refused

from .authorization import answer, denied
from .domain.events import MemberInvited, OrganizationEvent
from .domain.organization import CommandContext, Organization, org_uuid, require_creator
from .domain.scopes import listed
from .domain.values import VALUE_TRANSCODINGS, ApiKey, CustomRole, Invitation, Member
from .idempotency import DEFAULT_RETENTION, CommandFingerprint, CommandRecord, is_remembered, new_record, repeat_reply
from .recorders import CommandRecorder, POPOCommandRecorder, PostgresCommandRecorder
from .secrets import KeyName, Secrets, secrets_match

SNAPSHOT_INTERVAL = 200
EMBEDDED_LIST_LIMIT = 100

Saved = tuple[int, OrganizationEvent]  # an event as saved: its notification id, and the event


@dataclass
class Decision:
    """A command's reply; for a success with events, the organization to save and the record to save with it;
    once saved, its events with their notification ids."""

    org_id: str
    reply: Reply
    org: Organization | None = None
    record: CommandRecord | None = None
    recorded: list[Any] = field(default_factory=list)
    saved: list[Saved] = field(default_factory=list)

    @property
    def needs_saving(self) -> bool:
        return bool(self.recorded)


@dataclass(frozen=True)
class Batch:
    """What decisions saved together write in their transaction: their events in order, their command
    records, and the organization of each new invitation."""

    events: list[OrganizationEvent]
    records: list[CommandRecord]
    invitation_orgs: list[tuple[str, str]]

    @classmethod
    def of(cls, decisions: Sequence[Decision]) -> Batch:
        events = [event for decision in decisions for event in decision.recorded]
        return cls(
            events,
            [d.record for d in decisions if d.record is not None],
            [(e.invitation_id, e.org_id) for e in events if isinstance(e, MemberInvited)],
        )


def require_sensible_at(command: cmd.Command, now: datetime) -> None:
    """The part of the body's shape that depends on the time: checked first, like the rest of the shape."""
    if isinstance(command, cmd.CreateApiKey) and command.expires_at is not None and command.expires_at <= now:
        raise Invalid("expires_at must lie in the future", field="expires_at")


def snapshot_interval(org: Organization) -> int:
    """Events between snapshots: SNAPSHOT_INTERVAL doubled until it reaches the state's size (its
    members, invitations, keys and roles), so that encoding snapshots costs a bounded share of each
    event (under one entry of state) while a load replays fewer events than twice the state.
    Doublings keep the intervals nested: whatever the size, a snapshot falls on a multiple of one."""
    size = len(org.members) + len(org.invitations) + len(org.api_keys) + len(org.roles)
    interval = SNAPSHOT_INTERVAL
    while interval < size:
        interval *= 2
    return interval


def random_id(prefix: str) -> str:
    """128 random bits in hex (a uuid4's shape, without building a UUID on the command path)."""
    return f"{prefix}_{os.urandom(16).hex()}"


def org_id_for(command: cmd.Command) -> str:
    """An org created without an explicit id gets one derived from the command, so a repeat finds it."""
    if command.org_id:
        return command.org_id
    return "org_" + hashlib.sha256(command.command_id.encode()).hexdigest()[:24]


class MembershipApplication(Application):
    name = "membership"
    env = {"AGGREGATE_CACHE_MAXSIZE": "2000", "IS_SNAPSHOTTING_ENABLED": "y"}  # noqa: RUF012 - the library reads it from the class

    def __init__(
        self,
        clock: Clock,
        secrets: Secrets,
        new_id: Callable[[str], str] = random_id,
        env: dict[str, str] | None = None,
        command_retention: timedelta = DEFAULT_RETENTION,
    ) -> None:
        env = dict(env or {})
        if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
            env.setdefault("APPLICATION_RECORDER_TOPIC", get_topic(PostgresCommandRecorder))
        super().__init__(env)
        self.clock = clock
        self.secrets = secrets
        self.new_id = new_id
        self.command_retention = command_retention

    def construct_recorder(self) -> Any:
        if isinstance(self.factory, POPOFactory):
            return POPOCommandRecorder()
        return super().construct_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for transcoding in VALUE_TRANSCODINGS:
            transcoder.register(transcoding)

    @property
    def commands(self) -> CommandRecorder:
        return self.recorder  # type: ignore[return-value]

    # -- deciding -----------------------------------------------------------------

    def decide(self, org_id: str, name: str, command: cmd.Command, fingerprint: CommandFingerprint) -> Decision:
        """The reply to the command, and what to save for it; nothing shared changes here."""
        now = self.clock.now()
        since = now - self.command_retention
        cached = None if isinstance(command, cmd.CreateOrganization) else self._cached(org_id)
        if cached is None:
            earlier = self.commands.find_command(command.command_id, since)
        else:
            # One round trip: the command's record, and what other instances saved since the cached version.
            earlier, newer = self.commands.command_and_events_after(command.command_id, since, cached.id, cached.version)
            for stored in newer:
                cached = cast(Organization, self.mapper.to_domain_event(stored).mutate(cached))  # type: ignore[attr-defined]
        if earlier is not None:
            return Decision(org_id, repeat_reply(earlier, org_id, fingerprint, self.secrets.seal))
        ctx = CommandContext(command.actor, command.command_id, command.correlation_id, now, self.new_id)
        org: Organization | None = None
        sealed = False
        try:
            require_sensible_at(command, now)
            if isinstance(command, cmd.CreateOrganization):
                org = self._create(ctx, org_id, command)
                result = org.creation_result()
            else:
                org = self.organization_for_change(org_id) if cached is None else copy.deepcopy(cached)
                result, sealed = self._decide(org, ctx, command)
        except Refused as refused:
            return self._refusal(org_id, command, fingerprint, failure(refused.code, refused.message, refused.details), now)
        return self._success(org_id, command, fingerprint, org, result, sealed, now)

    def decide_from_memory(
        self, org_id: str, command: cmd.Command, fingerprint: CommandFingerprint, known_version: int = 0
    ) -> Decision | None:
        """A success with events, decided on the cached organization alone, without reading the store;
        None when the command needs the store (`decide`): no cached organization, a creation, a refusal
        or a reply without events.

        Neither a repeat nor another instance's newer events are looked for here: the save finds them.
        Its events take the versions after the cached one, and its record the command's id, so if
        another instance saved events of this organization meanwhile, or this command was recorded
        already, the store refuses the whole transaction (IntegrityError) and the runner decides again
        with `decide`, on what the store holds. A reply that saves nothing has no such check, so it is
        never given from here.

        `known_version` is the organization's version as this instance last heard of it from the stream
        (the access index's follower): a cached copy older than that is known stale, and deciding on it
        would only cost a refused save, so the store is read first instead. A hint, never the guarantee:
        the stream lags the store, and the store's keys decide."""
        if isinstance(command, cmd.CreateOrganization):
            return None
        cached = self._cached(org_id)
        if cached is None or cached.version < known_version:
            return None
        now = self.clock.now()
        ctx = CommandContext(command.actor, command.command_id, command.correlation_id, now, self.new_id)
        try:
            require_sensible_at(command, now)
            org = copy.deepcopy(cached)
            result, sealed = self._decide(org, ctx, command)
        except Refused:
            return None
        if not org.pending_events:
            return None
        return self._success(org_id, command, fingerprint, org, result, sealed, now)

    def _success(
        self,
        org_id: str,
        command: cmd.Command,
        fingerprint: CommandFingerprint,
        org: Organization,
        result: dict[str, Any],
        sealed: bool,
        now: datetime,
    ) -> Decision:
        recorded = list(org.pending_events)
        reply = success(result, [cast(OrganizationEvent, e).event_id for e in recorded])
        seal = self.secrets.seal if sealed else None
        record = new_record(org_id, command.command_id, fingerprint, reply, seal, now, self.command_retention)
        return Decision(org_id, reply, org, record, recorded)

    def _cached(self, org_id: str) -> Organization | None:
        """The cached organization, as the library keeps it (not yet fast-forwarded), or None."""
        if self.repository.cache is None:
            return None
        try:
            return cast(Organization, self.repository.cache.get(org_uuid(org_id)))
        except KeyError:
            return None

    def _refusal(
        self, org_id: str, command: cmd.Command, fingerprint: CommandFingerprint, reply: Reply, now: datetime
    ) -> Decision:
        if not is_remembered(reply):
            return Decision(org_id, reply)
        return Decision(
            org_id, reply, record=new_record(org_id, command.command_id, fingerprint, reply, None, now, self.command_retention)
        )

    def _create(self, ctx: CommandContext, org_id: str, command: cmd.CreateOrganization) -> Organization:
        try:
            self.organization(org_id)
        except NotFound:
            return Organization.create(ctx, org_id, command.name, command.plan, command.owner.user_id, command.owner.email)
        require_creator(ctx.actor, command.owner.user_id)
        raise Conflict(f"organization {org_id} already exists")

    def _decide(self, org: Organization, ctx: CommandContext, command: cmd.Command) -> tuple[dict[str, Any], bool]:
        """The command's result, and whether its reply carries a secret (and so is kept sealed)."""
        match command:
            case cmd.ChangePlan():
                return org.change_plan(ctx, command.plan), False
            case cmd.InviteMember():
                return org.invite_member(ctx, command.email, command.role, command.accept_charge_cents, command.projects), False
            case cmd.ResendInvitation():
                return org.resend_invitation(ctx, command.invitation_id), False
            case cmd.RevokeInvitation():
                return org.revoke_invitation(ctx, command.invitation_id), False
            case cmd.AcceptInvitation():
                token = command.token
                return org.accept_invitation(
                    ctx,
                    command.invitation_id,
                    command.user_id,
                    command.email,
                    lambda invitation_id, expires_at: self.secrets.token_matches(token, invitation_id, expires_at),
                ), False
            case cmd.ChangeRole():
                return org.change_role(ctx, command.user_id, command.role, command.new_scope(), command.keeps_scope()), False
            case cmd.RemoveMember():
                return org.remove_member(ctx, command.user_id, command.keep_api_keys), False
            case cmd.AddSeats():
                return org.add_seats(ctx, command.quantity, command.accept_charge_cents), False
            case cmd.RemoveSeats():
                return org.remove_seats(ctx, command.quantity), False
            case cmd.CreateApiKey():
                issued = self.secrets.issue_api_key(org.org_id, ctx.new_id("key"))
                result = org.create_api_key(
                    ctx,
                    command.name,
                    list(command.permissions),
                    command.owner_user_id,
                    command.expires_at,
                    issued.stored,
                    command.projects,
                )
                return {**result, "secret": issued.secret}, True
            case cmd.RevokeApiKey():
                return org.revoke_api_key(ctx, command.key_id), False
            case cmd.DefineRole():
                return org.define_role(ctx, command.role_key, command.name, command.description, list(command.permissions)), False
            case cmd.UpdateRole():
                permissions: list[str] | None = None if command.permissions is None else list(command.permissions)
                return org.update_role(ctx, command.role_key, command.name, command.description, permissions), False
            case cmd.DeleteRole():
                return org.delete_role(ctx, command.role_key), False
        raise TypeError(f"no handler for {type(command).__name__}")

    # -- recording ------------------------------------------------------------------

    def record(self, decisions: list[Decision]) -> list[Saved]:
        """Saves the events and command records of several decisions in one transaction (group commit);
        only then do their organizations become the cached ones. Returns the events saved, in
        notification order, and gives each decision its own (`Decision.saved`: for the relay)."""
        batch = Batch.of(decisions)
        # The events themselves, not the organizations: collecting an organization's events empties it, so a
        # batch the store refused would leave nothing to save when its decisions are saved one by one.
        recordings = self.save(*batch.events, command_records=batch.records, invitation_orgs=batch.invitation_orgs)
        saved = [(r.notification.id, cast(OrganizationEvent, r.domain_event)) for r in recordings]
        self.adopt_saved(decisions, saved)
        return saved

    def adopt_saved(self, decisions: Sequence[Decision], saved: Sequence[Saved]) -> None:
        """The saved decisions' organizations become the cached ones, their events no longer pending; each
        decision gets its share of `saved` (the decisions' events, in their order, with notification ids)."""
        assert len(saved) == sum(len(d.recorded) for d in decisions)
        start = 0
        for decision in decisions:
            decision.saved = list(saved[start : start + len(decision.recorded)])
            start += len(decision.recorded)
            if decision.org is not None:
                decision.org.collect_events()
                if self.repository.cache is not None:
                    self.repository.cache.put(decision.org.id, decision.org)

    def remember(self, decision: Decision) -> None:
        """The record of a reply that saved no events (a refusal, a no-op, a repeat's conflict is not one)."""
        if decision.record is not None:
            self.commands.remember_command(decision.record)

    def forget_commands(self, now: datetime) -> int:
        """Drops the records older than the retention window; their ids may then be decided afresh."""
        return self.commands.forget_commands_before(now - self.command_retention)

    @staticmethod
    def snapshot_due(decision: Decision) -> bool:
        """Whether the saved decision crossed a snapshot interval (checked on the loop: no hop when not)."""
        org = decision.org
        if org is None or org.pending_events:
            return False
        interval = snapshot_interval(org)
        return any(e.originator_version % interval == 0 for e in decision.recorded)

    def snapshot_if_due(self, decision: Decision) -> None:
        """Snapshots a saved organization when the decision crossed an interval.

        Taken from the saved copy after the reply, not rebuilt from the store inside the save, so
        that a snapshot never holds up the group commit, and never holds an unsaved change."""
        if self.snapshot_due(decision):
            self.snapshots.put([Organization.Snapshot.take(decision.org)])  # type: ignore[union-attr,arg-type]

    def evict(self, org_id: str) -> None:
        """Drops the cached organization; the next read reloads it from the snapshot and the store."""
        if self.repository.cache is not None:
            with contextlib.suppress(KeyError):
                self.repository.cache.get(org_uuid(org_id), evict=True)

    # -- reading --------------------------------------------------------------------

    def organization(self, org_id: str) -> Organization:
        """The cached organization itself, for reading: callers serialize per organization."""
        try:
            return self.repository.get(org_uuid(org_id), deepcopy_from_cache=False)
        except AggregateNotFoundError:
            raise NotFound(f"organization {org_id} does not exist") from None

    def organization_for_change(self, org_id: str) -> Organization:
        """A copy to decide on: the cached one stays as saved until the copy's events are."""
        try:
            return self.repository.get(org_uuid(org_id), deepcopy_from_cache=True)
        except AggregateNotFoundError:
            raise NotFound(f"organization {org_id} does not exist") from None

    def view_organization(self, org_id: str) -> q.OrganizationView:
        org = self.organization(org_id)
        now = self.clock.now()
        budget = paging.PAGE_BUDGET_BYTES // 2
        members, members_next = paging.page(
            list(org.members.values()), _member_position, None, EMBEDDED_LIST_LIMIT, _member_view, budget
        )
        invitations, invitations_next = paging.page(
            list(org.invitations.values()),
            _invitation_position,
            None,
            EMBEDDED_LIST_LIMIT,
            lambda i: _invitation_view(i, now),
            budget,
        )
        return q.OrganizationView(
            org_id=org.org_id,
            name=org.name,
            plan=org.plan,  # type: ignore[arg-type]
            members=members,
            invitations=invitations,
            seats=q.SeatQuote(**org.seat_quote(now)),
            members_next_cursor=members_next,
            invitations_next_cursor=invitations_next,
        )

    def members(self, query: q.MembersQuery) -> q.MembersPage:
        org = self.organization(query.org_id)
        chosen, next_cursor = paging.page(list(org.members.values()), _member_position, query.cursor, query.limit, _member_view)
        return q.MembersPage(members=chosen, next_cursor=next_cursor)

    def invitations(self, query: q.InvitationsQuery) -> q.InvitationsPage:
        org = self.organization(query.org_id)
        now = self.clock.now()
        candidates = [i for i in org.invitations.values() if query.status is None or i.status_at(now) == query.status]
        chosen, next_cursor = paging.page(
            candidates, _invitation_position, query.cursor, query.limit, lambda i: _invitation_view(i, now)
        )
        return q.InvitationsPage(invitations=chosen, next_cursor=next_cursor)

    def api_keys(self, query: q.ApiKeysQuery) -> q.ApiKeysPage:
        org = self.organization(query.org_id)
        now = self.clock.now()
        chosen, next_cursor = paging.page(
            list(org.api_keys.values()), _key_position, query.cursor, query.limit, lambda k: _key_view(org, k, now)
        )
        return q.ApiKeysPage(api_keys=chosen, next_cursor=next_cursor)

    def roles(self, query: q.RolesQuery) -> q.RolesPage:
        org = self.organization(query.org_id)
        chosen, next_cursor = paging.page(list(org.roles.values()), _role_position, query.cursor, query.limit, _role_view)
        return q.RolesPage(roles=chosen, next_cursor=next_cursor)

    def org_of_invitation(self, invitation_id: str) -> str:
        org_id = self.commands.org_of_invitation(invitation_id)
        if org_id is None:
            raise NotFound(f"invitation {invitation_id} does not exist")
        return org_id

    def invitation_behind_link(self, org_id: str, query: q.InvitationLinkQuery) -> q.InvitationLinkView:
        """What the page an invitation link opens may show, once the link's token matches."""
        org = self.organization(org_id)
        invitation = org.invitations.get(query.invitation_id)
        if invitation is None:
            raise NotFound(f"invitation {query.invitation_id} does not exist")
        if not self.secrets.token_matches(query.token, invitation.invitation_id, invitation.expires_at):
            raise InvalidToken("the invitation token does not match")
        inviter = invitation.invited_by
        return q.InvitationLinkView(
            org_id=org.org_id,
            org_name=org.name,
            email=invitation.email,
            role=invitation.role,
            invited_by=q.Principal(type=inviter.type, id=inviter.id) if inviter else None,  # type: ignore[arg-type]
            expires_at=invitation.expires_at,
            status=invitation.status_at(self.clock.now()),  # type: ignore[arg-type]
        )

    def seat_quote(self, org_id: str) -> dict[str, Any]:
        return self.organization(org_id).seat_quote(self.clock.now())

    def authorize_user(self, org_id: str, user_id: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        try:
            org = self.organization(org_id)
        except NotFound:
            return denied()
        member = org.members.get(user_id)
        if member is None:
            return denied(org_id)
        granted = sorted(org.permissions_of(Actor(type="user", id=user_id), self.clock.now()))
        return answer(org_id, "user", user_id, member.role, granted, listed(member.projects), permission, project_id)

    def authorize_key(self, named: KeyName, secret: str, permission: str, project_id: str | None = None) -> dict[str, Any]:
        """`named` is what `parse_api_key(secret)` found; the secret is checked against the stored hash here."""
        try:
            org = self.organization(named.org_id)
        except NotFound:
            return denied()
        key = org.api_keys.get(named.key_id)
        if key is None or not secrets_match(secret, key.secret_hash):
            return denied()
        granted = sorted(org.key_permissions(key, self.clock.now()))
        if not granted:
            return denied(named.org_id)
        owner = org.members.get(key.owner_user_id) if key.owner_user_id else None
        scope = listed(org.key_scope(key, self.clock.now()))
        role = owner.role if owner else None
        return answer(named.org_id, "api_key", named.key_id, role, granted, scope, permission, project_id)


def _member_position(member: Member) -> paging.Position:
    return pricing.microseconds(member.joined_at), member.user_id


def _invitation_position(invitation: Invitation) -> paging.Position:
    return pricing.microseconds(invitation.invited_at), invitation.invitation_id


def _key_position(key: ApiKey) -> paging.Position:
    return pricing.microseconds(key.created_at), key.key_id


def _role_position(role: CustomRole) -> paging.Position:
    return 0, role.role_key  # by key: a role has no instant of its own


def _member_view(member: Member) -> q.MemberView:
    return q.MemberView(
        user_id=member.user_id, email=member.email, role=member.role, joined_at=member.joined_at, projects=listed(member.projects)
    )


def _role_view(role: CustomRole) -> q.RoleView:
    return q.RoleView(
        role_key=role.role_key,
        name=role.name,
        description=role.description,
        permissions=sorted(role.permissions),  # type: ignore[arg-type]
    )


def _invitation_view(invitation: Invitation, now: datetime) -> q.InvitationView:
    return q.InvitationView(
        invitation_id=invitation.invitation_id,
        email=invitation.email,
        role=invitation.role,
        expires_at=invitation.expires_at,
        status=invitation.status_at(now),  # type: ignore[arg-type]
        projects=listed(invitation.projects),
    )


def _key_view(org: Organization, key: ApiKey, now: datetime) -> q.ApiKeyView:
    return q.ApiKeyView(
        key_id=key.key_id,
        name=key.name,
        prefix=key.prefix,
        owner_user_id=key.owner_user_id,
        permissions=sorted(key.permissions),  # type: ignore[arg-type]
        expires_at=key.expires_at,
        created_at=key.created_at,
        created_by=q.Principal(type=key.created_by.type, id=key.created_by.id) if key.created_by else None,  # type: ignore[arg-type]
        status=key.status_at(now) if key.revoked or key.has_expired(now) or org.is_live(key, now) else "inactive",  # type: ignore[arg-type]
        projects=listed(key.projects),
    )
