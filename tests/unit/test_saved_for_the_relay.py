"""What a save hands the relay (`Decision.saved`, the group commit's listeners) is what the store holds,
and publishes to the same bytes as the event read back from the store."""

from __future__ import annotations

import asyncio
from typing import Any

from services.membership.application import Saved
from services.membership.group_commit import GroupCommit
from services.membership.publication import publication_of
from services.membership.runner import CommandRunner
from tests.unit.builders import SYSTEM, new_org, user


def stored(world: Any) -> list[Saved]:
    return [(n.id, world.app.mapper.to_domain_event(n)) for n in world.app.recorder.select_notifications(1, 100_000)]


def test_events_saved_from_memory_publish_as_the_store_s_do():
    world = new_org("enterprise")
    offered: list[Saved] = []
    record = world.app.record
    world.app.record = lambda decisions: offered.extend(record(decisions)) or []  # type: ignore[method-assign]
    owner = user(world.owner_id)
    world.add_member("dev1", "developer")
    world.invite("later@acme.io", "admin", projects=["ci"])
    world.ok("add_seats", owner, quantity=2, accept_charge_cents=1_000_000)
    key_id = world.create_key("ci", ["members:read"], projects=["ci"])
    world.ok("define_role", owner, role_key="viewer", name="Viewer", description="reads", permissions=["members:read"])
    world.ok("change_role", owner, user_id="dev1", role="viewer", projects=["ci", "web"])
    world.ok("revoke_api_key", owner, key_id=key_id)
    world.ok("remove_member", owner, user_id="dev1")
    world.ok("change_plan", SYSTEM, plan="pro")

    from_store = {notification_id: event for notification_id, event in stored(world)}
    assert len({type(event) for _, event in offered}) >= 8
    for notification_id, event in offered:
        assert publication_of(event) == publication_of(from_store[notification_id])


def test_the_group_commit_hands_its_listeners_each_save_in_notification_order_before_answering():
    world = new_org()
    heard: list[list[Saved]] = []
    answered: list[int] = []

    def listener(saved: Any) -> None:
        heard.append(list(saved))
        assert len(answered) < sum(len(h) for h in heard)  # not all answered before their save was heard of

    async def invite_many() -> None:
        group_commit = GroupCommit(lambda decisions: asyncio.to_thread(world.app.record, decisions))
        group_commit.listeners.append(listener)
        runner = CommandRunner(world.app, record=group_commit.submit)
        orgs = []
        for n in range(6):
            reply = await runner.run("create_organization", world.command("create_organization", SYSTEM, **org_body(n)))
            orgs.append(reply.result["org_id"])

        async def invite(org_id: str, k: int) -> None:
            command = world.command(
                "invite_member", SYSTEM, org_id=org_id, email=f"m{k}@x.io", role="developer", accept_charge_cents=10**9
            )
            reply = await runner.run("invite_member", command)
            assert reply.ok, reply.error
            answered.append(1)

        await asyncio.gather(*(invite(org_id, k) for k in range(5) for org_id in orgs))

    world.loop.run(invite_many())
    everything = [pair for saved in heard for pair in saved]
    assert [n for n, _ in everything] == [n for n, _ in stored(world)][-len(everything) :]
    for saved in heard:
        assert [n for n, _ in saved] == sorted(n for n, _ in saved)
    assert [e.event_id for _, e in everything] == [e.event_id for _, e in stored(world)][-len(everything) :]


def org_body(n: int) -> dict[str, Any]:
    return {"org_id": f"org-{n}", "name": f"Org {n}", "plan": "pro", "owner": {"user_id": f"o{n}", "email": f"o{n}@x.io"}}
