"""The facts an organization records, and how each changes its state.

Every event carries the envelope's provenance (`event_id`, `actor`, `command_id`, ...).
Replies to commands are not in events: they live in the command records (`idempotency.py`).
`secret_hash` on ApiKeyCreated stays inside the store: the relay never publishes it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from shared.contract.common import Role

from .values import ActorRef, ApiKey, CustomRole, Invitation, Member

if TYPE_CHECKING:
    from .organization import Organization


class OrganizationEvent(Aggregate.Event):
    org_id: str
    event_id: str
    actor: dict[str, str]
    command_id: str
    correlation_id: str | None

    def apply(self, org: Organization) -> None:
        self.change(org)

    def change(self, org: Organization) -> None:
        raise NotImplementedError


class OrganizationCreated(Aggregate.Created):
    org_id: str
    event_id: str
    actor: dict[str, str]
    command_id: str
    correlation_id: str | None
    name: str
    plan: str
    owner_user_id: str
    owner_email: str
    seats_included: int
    unit_price_cents: int
    billing_anchor: datetime

    def apply(self, org: Organization) -> None:
        org.org_id = self.org_id
        org.name = self.name
        org.plan = self.plan
        org.seats_included = self.seats_included
        org.seats_purchased = 0
        org.unit_price_cents = self.unit_price_cents
        org.billing_anchor = self.billing_anchor
        org.members = {}
        org.invitations = {}
        org.api_keys = {}
        org.member_emails = {}
        org.open_expiries = []
        org.open_by_email = {}
        org.roles = {}
        org.join(Member(self.owner_user_id, self.owner_email, "owner", self.timestamp))


class PlanChanged(OrganizationEvent):
    from_plan: str
    to_plan: str
    seats_included: int
    billing_anchor: datetime

    def change(self, org: Organization) -> None:
        org.plan = self.to_plan
        org.seats_included = self.seats_included
        org.billing_anchor = self.billing_anchor


class MemberInvited(OrganizationEvent):
    invitation_id: str
    email: str
    role: Role
    invited_by: dict[str, str]
    expires_at: datetime

    def change(self, org: Organization) -> None:
        org.open_invitation(
            Invitation(
                self.invitation_id,
                self.email,
                self.role,
                self.timestamp,
                self.expires_at,
                "pending",
                ActorRef.of(self.invited_by),
            )
        )


class InvitationResent(OrganizationEvent):
    invitation_id: str
    email: str
    expires_at: datetime

    def change(self, org: Organization) -> None:
        org.extend_invitation(self.invitation_id, self.expires_at)


class InvitationRevoked(OrganizationEvent):
    invitation_id: str
    email: str

    def change(self, org: Organization) -> None:
        org.close_invitation(self.invitation_id, "revoked")


class InvitationAccepted(OrganizationEvent):
    invitation_id: str
    user_id: str
    email: str
    role: Role

    def change(self, org: Organization) -> None:
        org.close_invitation(self.invitation_id, "accepted")
        org.join(Member(self.user_id, self.email, self.role, self.timestamp))


class RoleChanged(OrganizationEvent):
    user_id: str
    email: str
    from_role: Role
    to_role: Role

    def change(self, org: Organization) -> None:
        org.members[self.user_id] = replace(org.members[self.user_id], role=self.to_role)


class MemberRemoved(OrganizationEvent):
    class_version = 2

    user_id: str
    email: str
    role: Role
    kept_api_keys: list[str]

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["kept_api_keys"] = []

    def change(self, org: Organization) -> None:
        org.leave(self.user_id)
        remover = ActorRef.of(self.actor)
        for key_id in self.kept_api_keys:  # the remover vouches for them now: they live on within the remover's rights
            org.api_keys[key_id] = replace(org.api_keys[key_id], created_by=remover)


class SeatAdded(OrganizationEvent):
    quantity: int
    seats_total: int
    unit_price_cents: int
    charge_cents: int
    billing_period_start: datetime
    billing_period_end: datetime

    def change(self, org: Organization) -> None:
        org.seats_purchased += self.quantity


class SeatRemoved(OrganizationEvent):
    quantity: int
    seats_total: int
    unit_price_cents: int
    credit_cents: int
    billing_period_start: datetime
    billing_period_end: datetime

    def change(self, org: Organization) -> None:
        org.seats_purchased -= self.quantity


class ApiKeyCreated(OrganizationEvent):
    class_version = 2

    key_id: str
    name: str
    prefix: str
    owner_user_id: str | None
    permissions: list[str]
    expires_at: datetime | None
    secret_hash: str
    created_by: dict[str, str] | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Keys created before creators were recorded: removal goes by the owner alone."""
        state["created_by"] = None

    def change(self, org: Organization) -> None:
        org.api_keys[self.key_id] = ApiKey(
            key_id=self.key_id,
            name=self.name,
            prefix=self.prefix,
            owner_user_id=self.owner_user_id,
            permissions=frozenset(self.permissions),
            expires_at=self.expires_at,
            secret_hash=self.secret_hash,
            created_at=self.timestamp,
            created_by=ActorRef.of(self.created_by),
        )


class ApiKeyRevoked(OrganizationEvent):
    key_id: str
    reason: str

    def change(self, org: Organization) -> None:
        org.api_keys[self.key_id] = replace(org.api_keys[self.key_id], revoked=True)


class RoleDefined(OrganizationEvent):
    role_key: str
    name: str
    description: str
    permissions: list[str]

    def change(self, org: Organization) -> None:
        org.roles[self.role_key] = CustomRole(self.role_key, self.name, self.description, frozenset(self.permissions))


class RoleUpdated(OrganizationEvent):
    """The role as it is now, and as it was (`previous`: name, description, permissions)."""

    role_key: str
    name: str
    description: str
    permissions: list[str]
    previous: dict[str, Any]

    def change(self, org: Organization) -> None:
        org.roles[self.role_key] = CustomRole(self.role_key, self.name, self.description, frozenset(self.permissions))


class RoleDeleted(OrganizationEvent):
    """`previous` is what the role was, so that the audit shows the permissions it held."""

    role_key: str
    previous: dict[str, Any]

    def change(self, org: Organization) -> None:
        del org.roles[self.role_key]
