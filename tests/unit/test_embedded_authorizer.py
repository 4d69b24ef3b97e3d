"""The gateway's embedded authorizer reading the access bucket's values: a value it cannot read
(a permission, a role or a grant format from a newer writer) grants nothing, whatever it granted before."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from authorizer import Authorizer
from shared.contract.access import Heartbeat, KeyGrant, RoleGrant, key_entry, role_entry

pytestmark = pytest.mark.unit

SECRET = "tm_live_secret"
SECRET_HASH = "5b1f0c1f3a2f0e6e4b1d8f6a0e2d7c3b9a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d"


def replica(secret_hash: str = SECRET_HASH) -> Authorizer:
    authz = Authorizer(nc=None, max_staleness=5.0)
    authz._hashes[SECRET] = secret_hash  # the secret's sha256, precomputed: these tests are about the values
    authz._apply("feed.heartbeat", msgspec.json.encode(Heartbeat(at=datetime.now(UTC), position=1)), None)
    return authz


def key_grant(**changes: Any) -> dict[str, Any]:
    grant = KeyGrant(
        org_id="org_1",
        key_id="key_1",
        role="admin",
        permissions=["billing:manage", "org:read"],
        expires_at=None,
        status="live",
        version=3,
    )
    return {**msgspec.to_builtins(grant), **changes}


def role_grant(**changes: Any) -> dict[str, Any]:
    grant = RoleGrant(org_id="org_1", user_id="ada", role="admin", permissions=["billing:manage", "org:read"], version=3)
    return {**msgspec.to_builtins(grant), **changes}


def put(authz: Authorizer, entry: str, value: dict[str, Any]) -> None:
    authz._apply(entry, msgspec.json.encode(value), None)


def test_a_key_grant_this_version_can_read_is_followed():
    authz = replica()
    put(authz, key_entry(SECRET_HASH), key_grant())
    assert authz.check_key(SECRET, "billing:manage").allowed is True
    put(authz, key_entry(SECRET_HASH), key_grant(permissions=["org:read"]))
    assert authz.check_key(SECRET, "billing:manage").reason == "not_permitted"
    assert authz.check_key(SECRET, "org:read").allowed is True


@pytest.mark.parametrize(
    "newer",
    [
        {"permissions": ["org:read", "billing:export"]},  # a permission a newer writer knows
        {"role": "Billing_Manager"},  # a role this version's grammar refuses
        {"format": 2},  # a grant format from a newer writer
        {"permissions": "org:read"},
    ],
    ids=["unknown_permission", "unknown_role", "newer_format", "wrong_shape"],
)
def test_a_key_grant_this_version_cannot_read_drops_the_previous_grant(newer):
    authz = replica()
    put(authz, key_entry(SECRET_HASH), key_grant())
    assert authz.check_key(SECRET, "billing:manage").allowed is True

    put(authz, key_entry(SECRET_HASH), key_grant(**newer))

    for permission in ("billing:manage", "org:read"):
        assert authz.check_key(SECRET, permission).reason == "unknown_key"


def test_an_unreadable_key_value_drops_the_grant_even_when_it_is_not_json():
    authz = replica()
    put(authz, key_entry(SECRET_HASH), key_grant())
    authz._apply(key_entry(SECRET_HASH), b"\x00not json", None)
    assert authz.check_key(SECRET, "org:read").reason == "unknown_key"


@pytest.mark.parametrize(
    "newer",
    [{"permissions": ["org:read", "billing:export"]}, {"role": "Billing_Manager"}, {"format": 2}],
    ids=["unknown_permission", "unknown_role", "newer_format"],
)
def test_a_role_grant_this_version_cannot_read_drops_the_previous_grant(newer):
    authz = replica()
    put(authz, role_entry("org_1", "ada"), role_grant())
    assert authz.check_user("org_1", "ada", "billing:manage").allowed is True

    put(authz, role_entry("org_1", "ada"), role_grant(**newer))

    for permission in ("billing:manage", "org:read"):
        assert authz.check_user("org_1", "ada", permission).reason == "not_a_member"


def test_the_grants_written_today_say_their_format():
    assert key_grant()["format"] == 1 and role_grant()["format"] == 1
    old_writer = {k: v for k, v in key_grant().items() if k != "format"}  # written before grants had a format
    authz = replica()
    put(authz, key_entry(SECRET_HASH), old_writer)
    assert authz.check_key(SECRET, "billing:manage").allowed is True
