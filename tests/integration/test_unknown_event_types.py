"""Rolling deploys: membership may publish an event type (or a role key) a consumer has never seen.
Billing and the notifier ignore it, audit records it generically; none dead-letters it. Real NATS
and PostgreSQL, each projection consuming the stream in-process as its service does."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from services.audit.projection import AuditProjection
from services.audit.read_model import AuditReadModel
from services.billing.projection import BillingProjection
from services.notifier.projection import NotifierProjection
from shared.consumer import ConsumerSettings, ProjectionConsumer
from shared.contract import queries as q
from shared.dead_letters import parked
from shared.stream_heads import StreamHeads
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming

T0 = datetime(2024, 1, 1, 9, tzinfo=UTC)
SERVICES = {"billing": BillingProjection, "audit": AuditProjection, "notifier": NotifierProjection}


class Projector:
    def __init__(self, js: Any, pool: Any, service: str) -> None:
        self.js, self.pool, self.schema = js, pool, service
        self.projection = SERVICES[service](service)
        settings = ConsumerSettings(
            durable=service, service=service, max_attempts=2, retry_delay=0.1, gap_delay=0.1, ack_wait=2.0
        )
        self.consumer = ProjectionConsumer(js, pool, self.projection, settings)

    async def applied(self, org_id: str, sequence: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = await self.pool.fetchval(f"SELECT last_sequence FROM {self.schema}.positions WHERE org_id = $1", org_id)
            if last is not None and last >= sequence:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.schema} did not reach {org_id} #{sequence}")


def a_history_from_a_newer_membership() -> OrgHistory:
    history = OrgHistory("acme", T0, plan="enterprise")
    history._event("ProjectArchived", T0 + timedelta(minutes=1), {"project_id": "p1", "shiny": {"nested": [1, 2]}})
    history._event(
        "RoleDefined",
        T0 + timedelta(minutes=2),
        {"role_key": "billing-viewer", "name": "Billing viewer", "description": "", "permissions": ["billing:read"]},
    )
    invited = history.invited(T0 + timedelta(minutes=3))
    invited["data"]["role"] = "billing-viewer"
    history._event(
        "RoleUpdated",
        T0 + timedelta(minutes=4),
        {
            "role_key": "billing-viewer",
            "name": "Billing viewer",
            "description": "reads invoices",
            "permissions": ["billing:read", "org:read"],
            "previous": {"name": "Billing viewer", "description": "", "permissions": ["billing:read"]},
        },
    )
    history._event(
        "RoleDeleted",
        T0 + timedelta(minutes=5),
        {"role_key": "auditor", "previous": {"name": "Auditor", "description": "reads the log", "permissions": ["audit:read"]}},
    )
    history.seats_added(1, T0 + timedelta(minutes=6))  # a fact every consumer knows, after the rest
    return history


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_an_unknown_event_type_and_a_role_key_are_consumed_never_dead_lettered(clean_nats, database_url, service):
    history = a_history_from_a_newer_membership()
    async with consuming(clean_nats, database_url, lambda js, pool: Projector(js, pool, service)) as projector:
        for event in history.events:
            await publish(projector.js, event)

        await projector.applied("acme", len(history.events))

        assert await parked(projector.js) == []
        if service == "audit":
            found = await AuditReadModel(projector.pool, "audit", StreamHeads(projector.js)).search(
                msgspec.convert({"org_id": "acme", "limit": 100}, q.AuditSearch)
            )
            entries = msgspec.json.decode(msgspec.json.encode(found))["entries"]
            assert [e["action"] for e in entries] == [
                "organization.created",
                "unknown.ProjectArchived",
                "role.defined",
                "member.invited",
                "role.updated",
                "role.deleted",
                "seats.added",
            ]
            assert entries[1]["metadata"] == {"project_id": "p1", "shiny": {"nested": [1, 2]}}
            assert entries[2]["metadata"]["after"] == {"permissions": ["billing:read"]}
            assert entries[4]["metadata"]["before"]["permissions"] == ["billing:read"]
            assert entries[4]["metadata"]["after"]["permissions"] == ["billing:read", "org:read"]
            assert {"type": "role", "id": "billing-viewer"} in entries[4]["targets"]
            assert entries[5]["metadata"] == {
                "role_key": "auditor",
                "name": "Auditor",
                "description": "reads the log",
                "before": {"permissions": ["audit:read"]},
                "after": {"permissions": []},
            }
            assert entries[5]["targets"] == [{"type": "role", "id": "auditor"}]
        if service == "billing":
            charged = await projector.pool.fetchval("SELECT count(*) FROM billing.charges WHERE org_id = 'acme'")
            assert charged == 1  # the seat added after the unknown events was charged
        if service == "notifier":
            deliveries = await projector.pool.fetchval("SELECT count(*) FROM notifier.deliveries WHERE org_id = 'acme'")
            assert deliveries == 1  # the invitation to a custom role is mailed like any other


def a_history_of_odd_unknown_events() -> OrgHistory:
    """Unknown types whose data is not an object, holds what PostgreSQL's text refuses, or whose type
    holds controls and bidi overrides: a newer membership's, or a hostile publisher's."""
    history = OrgHistory("acme", T0, plan="enterprise")
    at = iter(T0 + timedelta(minutes=minute) for minute in range(1, 100))
    history._event("MadeUpList", next(at), [1, 2, 3])  # type: ignore[arg-type]
    history._event("MadeUpString", next(at), "hello")  # type: ignore[arg-type]
    history._event("MadeUpNull", next(at), None)  # type: ignore[arg-type]
    history._event("MadeUpNul", next(at), {"note": "a\u0000b", "key\u0000": ["x\u0000"], "fine": 1})
    history._event("Made\u202eUp", next(at), {"project_id": "p1"})
    history._event("Made\u2066Up\u0085" + "Z" * 80, next(at), {})
    history.seats_added(1, next(at))  # a fact every consumer knows, after the rest
    return history


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_unknown_events_of_any_shape_are_consumed_never_dead_lettered(clean_nats, database_url, service):
    history = a_history_of_odd_unknown_events()
    async with consuming(clean_nats, database_url, lambda js, pool: Projector(js, pool, service)) as projector:
        for event in history.events:
            await publish(projector.js, event)

        await projector.applied("acme", len(history.events))

        assert await parked(projector.js) == []
        if service == "audit":
            read_model = AuditReadModel(projector.pool, "audit", StreamHeads(projector.js))
            found = await read_model.search(msgspec.convert({"org_id": "acme", "limit": 100}, q.AuditSearch))
            entries = msgspec.json.decode(msgspec.json.encode(found))["entries"]
            actions = [e["action"] for e in entries]
            long_type = "unknown.Made_Up_" + "Z" * 48
            assert actions == [
                "organization.created",
                "unknown.MadeUpList",
                "unknown.MadeUpString",
                "unknown.MadeUpNull",
                "unknown.MadeUpNul",
                "unknown.Made_Up",
                long_type,
                "seats.added",
            ]
            assert [e["metadata"] for e in entries[1:4]] == [{"value": [1, 2, 3]}, {"value": "hello"}, {"value": None}]
            assert entries[4]["metadata"] == {"note": "a\\u0000b", "key\\u0000": ["x\\u0000"], "fine": 1}
            for action in ("unknown.Made_Up", long_type, "unknown.*"):  # every recorded action can be searched for
                by_action = msgspec.convert({"org_id": "acme", "action": action}, q.AuditSearch)
                assert (await read_model.search(by_action))["entries"], action
            verified = await read_model.verify("acme")
            assert verified["ok"] is True, verified
        if service == "billing":
            charged = await projector.pool.fetchval("SELECT count(*) FROM billing.charges WHERE org_id = 'acme'")
            assert charged == 1
        if service == "notifier":
            deliveries = await projector.pool.fetchval("SELECT count(*) FROM notifier.deliveries WHERE org_id = 'acme'")
            assert deliveries == 0
