"""The group commit on PostgreSQL: one transaction for many decisions, and what happens when the store
refuses one of them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from eventsourcing.persistence import IntegrityError

from services.membership.application import MembershipApplication
from services.membership.group_commit import GroupCommit
from services.membership.idempotency import CommandFingerprint
from services.membership.secrets import Secrets
from shared.clock import FixedClock
from shared.contract import commands as cmd
from shared.settings import postgres_env
from tests.servers import fresh_server_secret

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OWNER = {"type": "user", "id": "owner-1"}


def decide(app: MembershipApplication, org_id: str, command_name: str, command_id: str, /, **fields):
    body = msgspec.convert({"command_id": command_id, "actor": OWNER, "org_id": org_id, **fields}, cmd.COMMANDS[command_name])
    return app.decide(org_id, command_name, body, CommandFingerprint.of(command_name, body))


def create(app: MembershipApplication, org_id: str) -> None:
    owner = {"user_id": "owner-1", "email": "o@acme.io"}
    app.record([decide(app, org_id, "create_organization", f"create-{org_id}", name=org_id, plan="pro", owner=owner)])


@pytest.fixture
def app(database_url: str):
    application = MembershipApplication(
        FixedClock(T0), Secrets(fresh_server_secret()), env=postgres_env(database_url, pool_size=2)
    )
    create(application, "acme")
    create(application, "beta")
    yield application
    application.close()


def invitations_in_store(app: MembershipApplication, org_id: str) -> list[str]:
    app.evict(org_id)
    return sorted(i.email for i in app.organization(org_id).invitations.values())


async def test_a_batch_the_store_refuses_for_one_decision_saves_every_other_decision_with_its_events(app):
    doomed = decide(app, "acme", "invite_member", "doomed", email="a@acme.io", role="developer")
    app.record([decide(app, "acme", "invite_member", "rival", email="r@acme.io", role="developer")])  # takes doomed's version
    fine = decide(app, "beta", "invite_member", "fine", email="b@beta.io", role="developer")
    commit = GroupCommit(lambda decisions: asyncio.to_thread(app.record, decisions))

    outcomes = await asyncio.gather(commit.submit(doomed), commit.submit(fine), return_exceptions=True)

    assert isinstance(outcomes[0], IntegrityError)
    assert outcomes[1] is None
    assert app.commands.find_command("doomed", T0 - timedelta(days=1)) is None
    assert app.commands.find_command("fine", T0 - timedelta(days=1)) is not None
    assert invitations_in_store(app, "acme") == ["r@acme.io"]
    assert invitations_in_store(app, "beta") == ["b@beta.io"]
