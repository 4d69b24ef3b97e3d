"""Domain events stored before project scopes (v1.4) load through the application's mapper and mean
"every project": `MemberInvited`, `InvitationAccepted` and `RoleChanged` v1, `ApiKeyCreated` v1 and v2.

Each stored event is rewritten as the older code wrote it (no `projects`, the older `class_version`,
which the mapper leaves out of the state for version 1), then replayed into a fresh application."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from services.membership.application import MembershipApplication
from services.membership.secrets import Secrets

from .builders import SERVER_SECRET, SYSTEM, CountingIds, World, email_of, new_app, new_org, user

pytestmark = pytest.mark.unit

# event class -> (the class_version the older code stored, the fields it did not have)
AS_BEFORE_SCOPES: dict[str, tuple[int, tuple[str, ...]]] = {
    "MemberInvited": (1, ("projects",)),
    "InvitationAccepted": (1, ("projects",)),
    "RoleChanged": (1, ("from_projects", "projects")),
    "ApiKeyCreated": (2, ("projects",)),
}
API_KEY_V1 = (1, ("projects", "created_by"))  # before creators were recorded, too


def a_scoped_history() -> World:
    """Today's events, every one of them scoped to `web`: an older writer's copy must lose that."""
    world = new_org("pro")
    invitation = world.invite(email_of("dana"), "developer", projects=["web"], accept_charge_cents=10**6)
    assert world.accept(invitation, "dana").ok
    world.invite(email_of("erin"), "developer", projects=["web"], accept_charge_cents=10**6)  # still pending
    world.ok("change_role", SYSTEM, user_id="dana", role="admin", projects=["web", "api"])
    world.create_key("ci", ["gateway:use", "projects:use"], by=user("owner1"), owner_user_id="dana", projects=["web"])
    world.create_key("old", ["gateway:use"], by=user("owner1"), projects=["web"])
    return world


def as_older_code_wrote(world: World, rewrite: dict[str, tuple[int, tuple[str, ...]]]) -> list[StoredEvent]:
    mapper = world.app.mapper
    assert mapper.cipher is None and mapper.compressor is None  # the state below is the transcoder's alone
    stored = []
    for notification in world.app.recorder.select_notifications(1, 100_000):
        state = notification.state
        older = rewrite.get(event_name(notification.topic))
        if older is not None:
            class_version, absent = older
            fields: dict[str, Any] = mapper.transcoder.decode(state)
            for name in absent:
                del fields[name]
            fields.pop("class_version")
            if class_version > 1:  # the mapper stores the version only above 1
                fields["class_version"] = class_version
            state = mapper.transcoder.encode(fields)
        stored.append(StoredEvent(notification.originator_id, notification.originator_version, notification.topic, state))
    return stored


def event_name(topic: str) -> str:
    return topic.rpartition(":")[2]  # "services.membership.domain.events:RoleChanged"


def replayed(world: World, events: list[StoredEvent]) -> World:
    app = MembershipApplication(world.clock, Secrets(SERVER_SECRET), new_id=CountingIds())
    app.recorder.insert_events(events)
    replica = new_app(app=app, clock=world.clock)
    replica.org_id, replica.keys, replica.key_secrets = world.org_id, world.keys, world.key_secrets
    return replica


def test_the_rewrite_is_what_the_older_code_stored():
    world = a_scoped_history()
    rewritten = {
        event_name(e.topic): world.app.mapper.transcoder.decode(e.state) for e in as_older_code_wrote(world, AS_BEFORE_SCOPES)
    }
    assert set(AS_BEFORE_SCOPES) <= set(rewritten)
    assert "projects" not in rewritten["RoleChanged"] and "from_projects" not in rewritten["RoleChanged"]
    assert "class_version" not in rewritten["MemberInvited"] and rewritten["ApiKeyCreated"]["class_version"] == 2


@pytest.mark.parametrize("api_key_as", [AS_BEFORE_SCOPES["ApiKeyCreated"], API_KEY_V1], ids=["api_key_v2", "api_key_v1"])
def test_events_stored_before_scopes_load_as_every_project(api_key_as):
    world = a_scoped_history()
    rewrite = {**AS_BEFORE_SCOPES, "ApiKeyCreated": api_key_as}
    events = replayed(world, as_older_code_wrote(world, rewrite))

    upcast = [event for event in events.recorded() if type(event).__name__ in AS_BEFORE_SCOPES]
    assert len(upcast) == 6
    for event in upcast:
        for name in AS_BEFORE_SCOPES[type(event).__name__][1]:
            assert getattr(event, name) is None, (type(event).__name__, name)

    org = events.app.organization(world.org_id)
    assert org.members["dana"].role == "admin" and org.members["dana"].projects is None
    assert {i.email: i.projects for i in org.invitations.values() if i.status == "pending"} == {email_of("erin"): None}
    assert {k.name: k.projects for k in org.api_keys.values()} == {"ci": None, "old": None}

    for project_id in (None, "web", "ml"):  # every project, and the project-level permissions without one too
        assert events.authorize_user("dana", "projects:use", project_id)["allowed"] is True
        assert events.authorize_key(world.keys["ci"], "gateway:use", project_id)["allowed"] is True
        assert events.authorize_key(world.keys["old"], "gateway:use", project_id)["allowed"] is True


def test_the_same_events_stored_today_keep_their_scopes():
    """The control: replayed unchanged, the scopes are there (the rewrite is what removes them)."""
    world = a_scoped_history()
    events = replayed(world, as_older_code_wrote(world, {}))
    org = events.app.organization(world.org_id)
    assert org.members["dana"].projects == frozenset({"web", "api"})
    assert events.authorize_key(world.keys["ci"], "gateway:use", "ml")["allowed"] is False
