"""Snapshots: taken from memory every SNAPSHOT_INTERVAL events, and an organization rebuilt from one
equals the live organization."""

from services.membership.application import SNAPSHOT_INTERVAL, snapshot_interval
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


def test_the_interval_doubles_from_snapshot_interval_until_it_reaches_the_state_s_size():
    world = new_org(plan="pro")
    org = world.app.organization(world.org_id)
    assert snapshot_interval(org) == SNAPSHOT_INTERVAL  # one member
    for size, interval in [(SNAPSHOT_INTERVAL, SNAPSHOT_INTERVAL), (SNAPSHOT_INTERVAL + 1, 2 * SNAPSHOT_INTERVAL)]:
        org.invitations = {f"i{n}": None for n in range(size - 1)}  # type: ignore[misc]
        assert snapshot_interval(org) == interval
    org.invitations = {f"i{n}": None for n in range(4 * SNAPSHOT_INTERVAL)}  # type: ignore[misc]
    assert snapshot_interval(org) == 8 * SNAPSHOT_INTERVAL  # 4 x plus the member


def test_a_growing_organization_is_snapshotted_ever_less_often_and_still_rebuilds_equal():
    world = new_org(plan="pro")
    world.ok("add_seats", user("owner1"), quantity=4 * SNAPSHOT_INTERVAL, accept_charge_cents=10**9)
    for n in range(4 * SNAPSHOT_INTERVAL):  # versions 3 .. 802, one invitation each
        world.invite(f"person{n}@example.com")
    app, org_id = world.app, world.org_id

    snapshots = list(app.snapshots.get(org_uuid(org_id)))
    # At 600 the state (about 600 entries) asks for 800 events between snapshots: 600 is no multiple of it.
    assert [s.originator_version for s in snapshots] == [SNAPSHOT_INTERVAL, 2 * SNAPSHOT_INTERVAL, 4 * SNAPSHOT_INTERVAL]

    live = app.organization(org_id)
    app.evict(org_id)
    rebuilt = app.organization(org_id)
    assert vars(rebuilt) == vars(live)
