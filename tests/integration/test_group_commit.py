"""The group commit on PostgreSQL: one transaction for many decisions, and what happens when the store
refuses one of them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
from eventsourcing.persistence import IntegrityError

from services.membership.application import Decision, MembershipApplication
from services.membership.event_writer import EventWriter
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


@pytest.fixture
async def writer(app, database_url: str):
    writing = EventWriter(app, database_url)
    yield writing
    await writing.close()


@pytest.fixture(params=["the library in a thread", "the event writer"])
def save(request, app):
    """Both ways of saving a batch: `MembershipApplication.record` (unit tests, POPO) and `EventWriter` (production)."""
    if request.param == "the event writer":
        return request.getfixturevalue("writer").save

    async def in_thread(decisions: list[Decision]) -> None:
        await asyncio.to_thread(app.record, decisions)

    return in_thread


async def test_a_batch_the_store_refuses_for_one_decision_saves_every_other_decision_with_its_events(app, save):
    doomed = decide(app, "acme", "invite_member", "doomed", email="a@acme.io", role="developer")
    app.record([decide(app, "acme", "invite_member", "rival", email="r@acme.io", role="developer")])  # takes doomed's version
    fine = decide(app, "beta", "invite_member", "fine", email="b@beta.io", role="developer")
    commit = GroupCommit(save)

    outcomes = await asyncio.gather(commit.submit(doomed), commit.submit(fine), return_exceptions=True)

    assert isinstance(outcomes[0], IntegrityError)
    assert outcomes[1] is None
    assert app.commands.find_command("doomed", T0 - timedelta(days=1)) is None
    assert app.commands.find_command("fine", T0 - timedelta(days=1)) is not None
    assert invitations_in_store(app, "acme") == ["r@acme.io"]
    assert invitations_in_store(app, "beta") == ["b@beta.io"]


async def test_the_writer_stores_what_the_library_reads_back_as_its_own(app, writer):
    library_saved = decide(app, "acme", "invite_member", "by-library", email="l@acme.io", role="developer")
    app.record([library_saved])
    batch = [
        decide(app, "acme", "invite_member", "one", email="one@acme.io", role="developer"),
        decide(app, "beta", "add_seats", "two", quantity=2, accept_charge_cents=10**9),
    ]
    saved = await writer.save(batch)
    batch.append(decide(app, "beta", "invite_member", "three", email="t@beta.io", role="admin"))  # on what "two" saved
    saved += await writer.save(batch[2:])

    notifications = app.recorder.select_notifications(1, 100)
    assert [n.id for n in notifications] == list(range(1, len(notifications) + 1))
    assert [n_id for n_id, _ in saved] == [n.id for n in notifications[-3:]]
    by_id = {n.id: n for n in notifications}
    for notification_id, event in saved:
        read_back = app.mapper.to_domain_event(by_id[notification_id])
        assert read_back == event
    assert [e.originator_version for _, e in saved] == [3, 2, 3]
    invitation = next(e for _, e in saved if type(e).__name__ == "MemberInvited")
    assert app.org_of_invitation(invitation.invitation_id) == "acme"
    for decision in batch:
        assert decision.org.pending_events == []
        assert app.commands.find_command(decision.record.command_id, T0) is not None
    assert invitations_in_store(app, "beta") == ["t@beta.io"]
    assert app.organization("beta").seats_total == app.organization("acme").seats_total + 2


async def test_the_writer_refuses_a_repeat_inside_the_window_and_replaces_a_record_past_it(app, writer, monkeypatch):
    await writer.save([decide(app, "acme", "invite_member", "once", email="a@acme.io", role="developer")])
    # another instance that had not yet seen the record decides the same command id in another organization
    with monkeypatch.context() as unseen:
        unseen.setattr(app.commands, "find_command", lambda *_: None)
        events_only = app.commands.command_and_events_after
        unseen.setattr(app.commands, "command_and_events_after", lambda *args: (None, events_only(*args)[1]))
        again = decide(app, "beta", "invite_member", "once", email="b@beta.io", role="developer")

    with pytest.raises(IntegrityError):
        await writer.save([again])
    assert invitations_in_store(app, "beta") == []

    app.clock.advance(hours=25)
    later = decide(app, "beta", "invite_member", "once", email="b@beta.io", role="developer")
    await writer.save([later])
    assert invitations_in_store(app, "beta") == ["b@beta.io"]
    assert app.commands.find_command("once", app.clock.now() - timedelta(hours=1)).org_id == "beta"


async def test_the_writer_refuses_one_command_id_twice_in_one_batch(app, writer):
    first = decide(app, "acme", "invite_member", "same", email="a@acme.io", role="developer")
    second = decide(app, "beta", "invite_member", "same", email="b@beta.io", role="developer")

    with pytest.raises(IntegrityError):
        await writer.save([first, second])
    assert invitations_in_store(app, "acme") == []
    assert invitations_in_store(app, "beta") == []


async def test_the_writer_saves_again_on_a_new_connection_when_its_connection_is_lost(app, writer, database_url):
    await writer.save([decide(app, "acme", "invite_member", "first", email="a@acme.io", role="developer")])
    admin = await asyncpg.connect(database_url)
    try:
        pid = writer.inserter._connection.get_server_pid()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()

    await writer.save([decide(app, "acme", "invite_member", "second", email="b@acme.io", role="developer")])

    assert writer.inserter._connection.get_server_pid() != pid
    assert invitations_in_store(app, "acme") == ["a@acme.io", "b@acme.io"]


async def test_the_writer_waits_for_the_table_lock_so_notification_ids_commit_in_order(app, writer, database_url):
    """The library's guarantee for readers of the notification log: no later id commits before an earlier one."""
    holder, observer = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        # ROW SHARE conflicts with the writer's EXCLUSIVE lock, not with the ROW EXCLUSIVE an INSERT takes
        await holder.execute("BEGIN; LOCK TABLE membership_events IN ROW SHARE MODE")
        saving = asyncio.create_task(
            writer.save([decide(app, "acme", "invite_member", "waits", email="w@acme.io", role="developer")])
        )
        for _ in range(300):  # until the writer's backend is seen waiting on the lock
            waiting = await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%save_decisions%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting == 1
        assert not saving.done()
        await holder.execute("COMMIT")
        await saving
    finally:
        await holder.close()
        await observer.close()
    assert invitations_in_store(app, "acme") == ["w@acme.io"]
