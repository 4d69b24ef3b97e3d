"""Every request subject of the services, a valid body for each, and a seeded corpus of malformed ones.

A body is malformed when the contract's own decoder refuses it (`msgspec` with the subject's
type): the service must answer it with `validation_error`. A query body that the decoder takes
but that is hostile all the same (a forged cursor, a limit of 1000, text from another script)
is kept apart: any contract answer but `internal` will do, and it is not counted as malformed.
A command or operator's request the decoder takes is never sent: it could change the team.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import msgspec

from shared import subjects
from shared.contract import commands, queries
from shared.schema import _QUERIES
from shared.topology import PROJECTORS, SERVICES

from .hostile import broken_bytes, encode_json, every_field_poisoned, mutated_body

PROJECTIONS = PROJECTORS
# Operators' subjects of the projections: only bodies their decoder refuses are sent, as a valid
# one would rebuild, purge, renew or retry.
ADMIN_REQUESTS: dict[str, type[msgspec.Struct]] = {
    **{f"{service}.admin.{name}": queries.Health for service in PROJECTIONS for name in ("rebuild", "rebuild_status")},
    **{f"{service}.admin.retry_dead_letter": queries.RetryDeadLetter for service in PROJECTIONS},
    "billing.admin.renew": queries.Health,
    "audit.admin.purge": queries.Health,
}


def request_types() -> dict[str, type[msgspec.Struct]]:
    """Subject -> the type its service decodes: every command, every contract query, health,
    projection status and the operators' requests."""
    types: dict[str, type[msgspec.Struct]] = {subjects.command(name): kind for name, kind in commands.COMMANDS.items()}
    for subject, kind in _QUERIES.items():
        if subject.startswith("<service>"):
            continue
        types[subject] = kind
    for service in SERVICES:
        types[subjects.query(service, "health")] = queries.Health
    for service in PROJECTIONS:
        types[subjects.query(service, "projection_status")] = queries.Health
    return {**types, **ADMIN_REQUESTS}


def acts_when_valid(subject: str) -> bool:
    """A command or an operator's request: a body its decoder takes would change something."""
    return subject.startswith(subjects.COMMAND_PREFIX) or subject in ADMIN_REQUESTS


@dataclass(frozen=True)
class Team:
    """The organization the fuzz run aims at, with one of each thing a body can name."""

    org_id: str
    owner_id: str
    member_id: str
    invitation_id: str
    key_id: str
    event_id: str


def valid_bodies(team: Team) -> dict[str, dict[str, Any]]:
    """A body per subject that its decoder takes, with every optional field given."""
    owner = {"type": "user", "id": team.owner_id}

    def command(**fields: Any) -> dict[str, Any]:
        return {"command_id": "fuzz-valid", "correlation_id": "fuzz-corr", "org_id": team.org_id, "actor": owner, **fields}

    page = {"org_id": team.org_id, "limit": 10, "cursor": "AAAA"}
    span = {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    bodies: dict[str, dict[str, Any]] = {
        "membership.cmd.create_organization": {
            **command(name="Fuzz Co", plan="pro", owner={"user_id": "fuzz-owner", "email": "fuzz-owner@example.com"}),
            "actor": {"type": "system", "id": "platform"},
        },
        "membership.cmd.change_plan": command(plan="enterprise"),
        "membership.cmd.invite_member": command(email="new@example.com", role="developer", accept_charge_cents=0),
        "membership.cmd.resend_invitation": command(invitation_id=team.invitation_id),
        "membership.cmd.revoke_invitation": command(invitation_id=team.invitation_id),
        "membership.cmd.accept_invitation": command(
            invitation_id=team.invitation_id, token="tok_abc", user_id="joiner", email="new@example.com"
        ),
        "membership.cmd.change_role": command(user_id=team.member_id, role="admin"),
        "membership.cmd.remove_member": command(user_id=team.member_id, keep_api_keys=[team.key_id]),
        "membership.cmd.add_seats": command(quantity=1, accept_charge_cents=1_000),
        "membership.cmd.remove_seats": command(quantity=1),
        "membership.cmd.create_api_key": command(
            name="ci", permissions=["gateway:use"], owner_user_id=team.owner_id, expires_at="2100-01-01T00:00:00Z"
        ),
        "membership.cmd.revoke_api_key": command(key_id=team.key_id),
        "membership.cmd.define_role": command(
            role_key="billing-viewer", name="Billing viewer", description="reads invoices", permissions=["billing:read"]
        ),
        "membership.cmd.update_role": command(
            role_key="billing-viewer", name="Billing viewer", description="", permissions=["billing:read", "org:read"]
        ),
        "membership.cmd.delete_role": command(role_key="billing-viewer"),
        "membership.query.get_organization": {"org_id": team.org_id},
        "membership.query.members": page,
        "membership.query.invitations": {**page, "status": "pending"},
        "membership.query.api_keys": page,
        "membership.query.roles": page,
        "membership.query.user_orgs": {"user_id": team.owner_id, "limit": 10, "cursor": "AAAA"},
        "membership.query.invitation": {"invitation_id": team.invitation_id, "token": "not-the-token"},
        "membership.query.seat_quote": {"org_id": team.org_id},
        "membership.query.authorize": {"permission": "members:read", "org_id": team.org_id, "user_id": team.member_id},
        "billing.query.charges": page,
        "billing.query.upcoming_invoice": {"org_id": team.org_id},
        "billing.query.invoices": page,
        "audit.query.search": {
            "org_id": team.org_id,
            **span,
            "action": "member.invited",
            "actor_id": team.owner_id,
            "target_id": team.member_id,
            "cursor": "c2VxOjE=",
            "limit": 10,
        },
        "audit.query.verify": {"org_id": team.org_id},
        "audit.query.get_event": {"event_id": team.event_id},
        "audit.query.export": {"org_id": team.org_id, **span, "format": "csv", "cursor": "c2VxOjE="},
        "notifier.query.deliveries": page,
    }
    for subject, kind in request_types().items():
        if kind is queries.Health:
            bodies[subject] = {}
        elif kind is queries.RetryDeadLetter:
            bodies[subject] = {"sequence": 1}
    return bodies


@dataclass(frozen=True)
class FuzzRequest:
    index: int
    subject: str
    body: bytes
    how: str  # what was done to the valid body
    malformed: bool  # the contract's decoder refuses it

    def describe(self, limit: int = 300) -> str:
        shown = self.body[:limit] + (b"..." if len(self.body) > limit else b"")
        return f"#{self.index} {self.subject} ({self.how}, {len(self.body)} bytes): {shown!r}"


def decodes(body: bytes, kind: type[msgspec.Struct]) -> bool:
    """Whether the contract takes the body. msgspec reports invalid UTF-8 inside a string as a
    UnicodeDecodeError, not as a DecodeError."""
    try:
        msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def corpus(seed: int, team: Team, malformed_count: int, max_payload: int) -> list[FuzzRequest]:
    """Every field of every subject's valid body with every poison, then seeded random draws
    round-robin over the subjects until `malformed_count` requests are malformed; shuffled."""
    rng = random.Random(seed)
    types = request_types()
    bodies = valid_bodies(team)
    assert set(bodies) == set(types), "a valid body for every subject"
    assert all(decodes(encode_json(bodies[s], rng), kind) for s, kind in types.items()), "the valid bodies are valid"
    drawn: list[tuple[str, str, bytes, bool]] = []

    def keep(subject: str, how: str, body: bytes) -> None:
        if len(body) > max_payload or body == encode_json(bodies[subject], random.Random(0)):
            return  # the client could not send it (a full one is drawn on purpose), or it is the valid body
        refused = not decodes(body, types[subject])
        if refused or not acts_when_valid(subject):  # a command the contract takes is no fuzz
            drawn.append((subject, how, body, refused))

    for subject in sorted(types):
        for how, body in every_field_poisoned(bodies[subject]):
            keep(subject, how, encode_json(body, rng))
    order = sorted(types)
    turn = 0
    while sum(refused for *_, refused in drawn) < malformed_count:
        subject = order[turn % len(order)]
        turn += 1
        keep(subject, *_draw(rng, bodies[subject], max_payload))
    rng.shuffle(drawn)
    return [FuzzRequest(index, subject, body, how, refused) for index, (subject, how, body, refused) in enumerate(drawn)]


def _draw(rng: random.Random, valid: dict[str, Any], max_payload: int) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 0.55:
        how, body = mutated_body(rng, valid)
        return how, encode_json(body, rng)
    if roll < 0.995:
        return broken_bytes(rng, valid)
    return "a field as large as the bus allows", _filled_to(max_payload, valid, rng)


def _filled_to(max_payload: int, valid: dict[str, Any], rng: random.Random) -> bytes:
    field = rng.choice([*valid, "padding"])
    template = encode_json({**valid, field: ""}, rng)
    return template.replace(b'""', b'"' + b"x" * (max_payload - len(template)) + b'"', 1)
