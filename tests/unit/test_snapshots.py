"""Snapshots: taken from memory every SNAPSHOT_INTERVAL events, and an organization rebuilt from one
equals the live organization."""

from services.membership.application import SNAPSHOT_INTERVAL
from services.membership.domain.organization import org_uuid

from .builders import new_org, user


def test_an_organization_rebuilt_from_its_snapshot_equals_the_live_one():
    world = new_org(plan="pro")
    world.ok("add_seats", user("owner1"), quantity=SNAPSHOT_INTERVAL, accept_charge_cents=10**9)
    for n in range(SNAPSHOT_INTERVAL):
        world.invite(f"person{n}@example.com")
    app, org_id = world.app, world.org_id

    snapshots = list(app.snapshots.get(org_uuid(org_id)))
    assert [s.originator_version for s in snapshots] == [SNAPSHOT_INTERVAL]

    live = app.organization(org_id)
    app.evict(org_id)
    rebuilt = app.organization(org_id)
    assert rebuilt is not live
    assert vars(rebuilt) == vars(live)
