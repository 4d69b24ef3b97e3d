"""A rebuild served by an instance that does not pull the durable loses nothing.

Rebuild requests go to a queue group, so any instance takes one; one instance pulls the projector's
durable (the `pull:` advisory lock), often another one. Found by the review of issue 11's fifth round:
the rebuild paused only its own process's consumer, so the instance pulling applied and acked events
into the live schema while the swap was under way; the swap dropped them, the durable never gave them
again, and the organization waited at the gap for good. Now the swap holds the live schema's lock
(`shared/live_schema.py`) from before its final catch-up, and the other instance's batch waits for it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import shared.rebuild as rebuild_module
from services.audit.projection import LIVE_SCHEMA, AuditProjection
from tests.integration.histories import publish
from tests.integration.in_process import consuming
from tests.integration.test_audit_projection import T0, Audit, a_team_history
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def test_a_rebuild_on_the_instance_standing_by_keeps_the_events_the_other_one_applies_meanwhile(
    clean_nats, database_url, monkeypatch
):
    async with consuming(clean_nats, database_url, Audit) as pulling:
        history = a_team_history("acme")
        for event in history.events:
            await publish(pulling.js, event)
        await pulling.caught_up("acme", len(history.events))
        async with consuming(clean_nats, database_url, Audit) as standing_by:
            swap = rebuild_module._swap

            async def swap_once_the_other_instance_has_had_its_chance(connection, shadow_schema, live_schema):
                # traffic after the final catch-up, before the swap commits: the instance pulling takes it
                for day in range(3):
                    await publish(pulling.js, history.invited(T0 + timedelta(days=50 + day)))

                async def applied_or_waiting() -> bool:
                    waiting = await pulling.pool.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    )
                    applied = await pulling.pool.fetchval("SELECT last_seq FROM audit.chains WHERE org_id = 'acme'")
                    return bool(waiting) or applied == len(history.events)

                assert await eventually(applied_or_waiting)
                await swap(connection, shadow_schema, live_schema)

            monkeypatch.setattr(rebuild_module, "_swap", swap_once_the_other_instance_has_had_its_chance)
            await rebuild_module.rebuild(
                standing_by.js, standing_by.pool, AuditProjection("audit_rebuild"), LIVE_SCHEMA, standing_by.consumer.paused
            )
            monkeypatch.undo()

            await publish(pulling.js, history.invited(T0 + timedelta(days=60)))  # and a batch on the rebuilt schema
            await pulling.caught_up("acme", len(history.events))
            entries = await pulling.all_entries("acme")
            assert sorted(entry["seq"] for entry in entries) == list(range(1, len(history.events) + 1))
