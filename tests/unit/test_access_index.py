"""The access index: after any sequence of commands, the index kept by the runner's hook (read your
writes) equals one rebuilt from the store, and answers `authorize` as the store-based rules do."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.membership.access_index import AccessIndex
from shared.contract.queries import UserOrgsQuery

from .builders import SYSTEM, api_key, new_org, user

pytestmark = pytest.mark.unit

USERS = ["owner1", "u1", "u2", "u3"]
CUSTOM_ROLES = ["ops", "reader"]  # defined at the start; redefined, deleted and defined again by the steps
ROLES = ["owner", "admin", "developer", *CUSTOM_ROLES]
PERMS = ["gateway:use", "members:invite", "api_keys:manage", "billing:manage", "org:read"]
ROLE_PERMS = [*PERMS, "members:manage", "api_keys:own"]

actors = st.sampled_from([("user", u) for u in USERS] + [("system", "platform"), ("key", 0), ("key", 1), ("key", 2)])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(USERS[1:]), st.sampled_from(ROLES)),
        st.tuples(st.just("role"), actors, st.sampled_from(USERS), st.sampled_from(ROLES)),
        st.tuples(st.just("remove"), actors, st.sampled_from(USERS), st.booleans()),
        st.tuples(
            st.just("key"),
            actors,
            st.lists(st.sampled_from(PERMS), min_size=1, max_size=3, unique=True),
            st.sampled_from([None, *USERS]),
            st.sampled_from([None, 1, 30]),
        ),
        st.tuples(st.just("revoke"), actors, st.integers(0, 5)),
        st.tuples(st.just("time"), st.integers(1, 40)),
        st.tuples(
            st.just("redefine"),
            actors,
            st.sampled_from(CUSTOM_ROLES),
            st.lists(st.sampled_from(ROLE_PERMS), max_size=4, unique=True),
        ),
        st.tuples(st.just("delete_role"), actors, st.sampled_from(CUSTOM_ROLES)),
    ),
    max_size=25,
)


def _actor(world: Any, chosen: tuple[str, Any]) -> dict[str, str]:
    kind, which = chosen
    if kind == "system":
        return SYSTEM
    if kind == "user":
        return user(which)
    keys = list(world.key_secrets)
    return api_key(keys[which % len(keys)]) if keys else SYSTEM


@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_index_kept_by_the_commands_equals_one_rebuilt_from_the_store(steps: list[tuple[Any, ...]]) -> None:
    world = new_org("enterprise")
    for role_key in CUSTOM_ROLES:
        world.ok("define_role", SYSTEM, role_key=role_key, name=role_key, permissions=["org:read", "gateway:use"])
    for step in steps:
        match step:
            case ("add", user_id, role):
                defined = role not in CUSTOM_ROLES or role in world.app.organization(world.org_id).roles
                if world.role_of(user_id) is None and defined:
                    world.add_member(user_id, role)
            case ("role", actor, user_id, role):
                world.run("change_role", _actor(world, actor), user_id=user_id, role=role)
            case ("remove", actor, user_id, keep):
                kept = list(world.key_secrets) if keep else []
                world.run("remove_member", _actor(world, actor), user_id=user_id, keep_api_keys=kept)
            case ("key", actor, permissions, owner, days):
                fields: dict[str, Any] = {"name": "k", "permissions": permissions}
                if owner:
                    fields["owner_user_id"] = owner
                if days:
                    fields["expires_at"] = world.clock.now().replace(microsecond=0) + __import__("datetime").timedelta(days=days)
                reply = world.run("create_api_key", _actor(world, actor), **fields)
                if reply.ok:
                    world.key_secrets[reply.result["key_id"]] = reply.result["secret"]
            case ("revoke", actor, which):
                keys = list(world.key_secrets)
                if keys:
                    world.run("revoke_api_key", _actor(world, actor), key_id=keys[which % len(keys)])
            case ("time", days):
                world.clock.advance(days=days)
            case ("redefine", actor, role_key, permissions):
                fields = {"role_key": role_key, "permissions": permissions}
                if not world.run("update_role", _actor(world, actor), **fields).ok:
                    world.run("define_role", _actor(world, actor), name=role_key, **fields)
            case ("delete_role", actor, role_key):
                world.run("delete_role", _actor(world, actor), role_key=role_key)

    rebuilt = AccessIndex(world.clock.now)
    rebuilt.load(world.app)
    assert world.index.state() == rebuilt.state()
    for key_id in world.key_secrets:
        for permission in PERMS:
            world.authorize_key(key_id, permission)  # asserts the index's answer equals the store's
    for user_id in [*USERS, "stranger"]:
        world.authorize_user(user_id, "org:read")
        listed = world.index.user_orgs(UserOrgsQuery(user_id=user_id)).orgs
        role = world.role_of(user_id)
        assert [(o.org_id, o.role) for o in listed] == ([(world.org_id, role)] if role else [])


def test_read_your_writes_revoke_remove_and_change_role() -> None:
    world = new_org()
    world.add_member("dev1", "admin")
    key = world.create_key("k", ["gateway:use", "members:invite"], by=user("dev1"), owner_user_id="dev1")
    secret = world.key_secrets[key]
    assert world.index.authorize_key(secret, "members:invite")["allowed"] is True
    assert world.index.authorize_user(world.org_id, "dev1", "members:invite")["allowed"] is True

    world.ok("change_role", user(world.owner_id), user_id="dev1", role="developer")
    assert world.index.authorize_user(world.org_id, "dev1", "members:invite")["allowed"] is False
    assert world.index.authorize_key(secret, "members:invite")["allowed"] is False  # capped by the owner's new role
    assert world.index.authorize_key(secret, "gateway:use")["allowed"] is True

    world.ok("revoke_api_key", user(world.owner_id), key_id=key)
    assert world.index.authorize_key(secret, "gateway:use") == {
        "allowed": False,
        "org_id": world.org_id,
        "principal": None,
        "role": None,
        "permissions": [],
    }

    other = world.create_key("k2", ["gateway:use"], by=user("dev1"), owner_user_id="dev1")
    assert world.index.authorize_key(world.key_secrets[other], "gateway:use")["allowed"] is True
    world.ok("remove_member", user(world.owner_id), user_id="dev1", keep_api_keys=[])
    assert world.index.authorize_user(world.org_id, "dev1", "org:read")["allowed"] is False
    assert world.index.authorize_key(world.key_secrets[other], "gateway:use")["allowed"] is False


def test_a_key_dies_with_the_key_that_created_it_when_that_one_expires() -> None:
    from datetime import timedelta

    world = new_org()
    parent = world.create_key("parent", ["api_keys:manage", "gateway:use"], expires_at=world.clock.now() + timedelta(days=1))
    child = world.create_key("child", ["gateway:use"], by=api_key(parent))
    assert world.authorize_key(child, "gateway:use")["allowed"] is True
    world.clock.advance(days=2)
    assert world.authorize_key(child, "gateway:use")["allowed"] is False  # and the index agrees (see World)


def test_a_users_organizations_are_listed_earliest_joined_first_a_page_at_a_time() -> None:
    first = new_org()
    index = first.index
    joined = [first.org_id]
    for name in ("Second", "Third", "Fourth"):
        first.clock.advance(days=1)
        org = first.ok("create_organization", SYSTEM, name=name, plan="pro", owner={"user_id": "u9", "email": "u9@acme.io"})
        joined.append(org["org_id"])
    first.clock.advance(days=1)
    first.add_member("u9", "developer")  # joins the first org last
    expected = [*joined[1:], first.org_id]

    seen: list[str] = []
    cursor = None
    while True:
        page = index.user_orgs(UserOrgsQuery(user_id="u9", limit=2, cursor=cursor))
        seen += [o.org_id for o in page.orgs]
        assert len(page.orgs) <= 2
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    assert {o.org_name for o in index.user_orgs(UserOrgsQuery(user_id="u9")).orgs} == {"Second", "Third", "Fourth", "Acme"}

    first.ok("remove_member", user(first.owner_id), user_id="u9")
    assert [o.org_id for o in index.user_orgs(UserOrgsQuery(user_id="u9")).orgs] == joined[1:]
