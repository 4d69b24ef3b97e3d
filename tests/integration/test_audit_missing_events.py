"""`verify` never says a clean `ok` while an event the audit consumer passed is absent from the chain.

The events are published on the stream as the relay would; the consumer runs on real NATS and
PostgreSQL. What audit's store refuses is dead-lettered, and `verify` names its sequence.
"""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import msgspec
import pytest

from services.audit.projection import MIGRATIONS
from shared import subjects
from shared.contract import queries as q
from shared.dead_letters import DeadLetterDesk, parked
from shared.migrations import migrate
from shared.requests import reply_handler
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.integration.test_audit_projection import T0, Audit
from tests.waiting import eventually


@pytest.fixture
async def audit(clean_nats, database_url):
    async with consuming(clean_nats, database_url, Audit) as service:
        yield service


def api_key_created(history: OrgHistory, name: str) -> dict:
    at = T0 + timedelta(days=len(history.events))
    return history._event(
        "ApiKeyCreated",
        at,
        {
            "key_id": f"key_{history.sequence + 1}",
            "name": name,
            "prefix": "tm_live_abc",
            "owner_user_id": "owner",
            "permissions": ["gateway:use"],
            "expires_at": None,
        },
    )


async def published(audit: Audit, *events: dict) -> None:
    for event in events:
        await publish(audit.js, event)


async def the_dead_letter_of(audit: Audit, event: dict) -> int:
    for letter in await parked(audit.js, "audit"):
        if letter["original_subject"] == subjects.event(event["org_id"], event["event_type"]) and (
            await audit.js.get_msg(subjects.DEAD_LETTER_STREAM, letter["sequence"])
        ).data == msgspec.json.encode(event):
            return letter["sequence"]
    raise AssertionError(f"no dead letter for {event['event_id']}")


async def passed(audit: Audit, org_id: str, sequence: int) -> None:
    """Until the consumer's position for the organization reaches `sequence`."""

    async def position() -> bool:
        return (await audit.pool.fetchval("SELECT last_sequence FROM audit.positions WHERE org_id = $1", org_id) or 0) >= sequence

    assert await eventually(position), f"the audit consumer did not pass {org_id} #{sequence}"


async def test_an_event_the_store_refuses_is_reported_missing_and_stays_so_while_it_cannot_be_stored(audit):
    history = OrgHistory("acme", T0)
    history.invited(T0 + timedelta(hours=1))
    refused = api_key_created(history, "k\u0000")  # PostgreSQL's jsonb has no NUL
    history.invited(T0 + timedelta(days=9))
    await published(audit, *history.events)
    await audit.caught_up("acme", 3)  # the event after it went in: the consumer passed sequence 3

    verified = await audit.read_model.verify("acme")
    assert verified["ok"] is False and verified["missing"] == [[3, 3]] and verified["pending"] == 0, verified
    assert verified["missing_events"] == 1 and verified["entries_checked"] == 3

    retry = reply_handler(q.RetryDeadLetter, DeadLetterDesk(audit.consumer).retry)
    sequence = await the_dead_letter_of(audit, refused)
    answer = msgspec.json.decode(await retry(msgspec.json.encode({"sequence": sequence})))
    assert answer["ok"] is False
    still = await audit.read_model.verify("acme")
    assert still["ok"] is False and still["missing"] == [[3, 3]]


async def test_a_dead_letter_retried_once_its_cause_is_fixed_closes_the_gap(audit):
    history = OrgHistory("acme", T0)
    for day in range(1, 6):
        history.invited(T0 + timedelta(days=day))
    refused = [history.events[2], history.events[4]]
    await audit.pool.execute(
        """CREATE TABLE refused_for_now (event_id text PRIMARY KEY);
           CREATE FUNCTION refuse_for_now() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF EXISTS (SELECT 1 FROM refused_for_now r WHERE r.event_id = NEW.event_id) THEN
               RAISE EXCEPTION 'refused for now'; END IF; RETURN NEW; END $$;
           CREATE TRIGGER refuse_for_now BEFORE INSERT ON audit.entries FOR EACH ROW EXECUTE FUNCTION refuse_for_now();"""
    )
    await audit.pool.executemany("INSERT INTO refused_for_now VALUES ($1)", [(e["event_id"],) for e in refused])
    history.invited(T0 + timedelta(days=7))
    await published(audit, *history.events)
    await audit.caught_up("acme", 5)

    verified = await audit.read_model.verify("acme")
    assert verified["ok"] is False and verified["missing"] == [[3, 3], [5, 5]], verified

    await audit.pool.execute("DELETE FROM refused_for_now")  # the cause, fixed
    desk = DeadLetterDesk(audit.consumer)
    for event in refused:
        await desk.retry(q.RetryDeadLetter(sequence=await the_dead_letter_of(audit, event)))
    healed = await audit.read_model.verify("acme")
    assert (healed["ok"], healed["missing"], healed["entries_checked"]) == (True, [], 7), healed
    late = await audit.search(
        "acme", **{"from": (T0 + timedelta(days=2)).isoformat(), "to": (T0 + timedelta(days=3)).isoformat()}
    )
    assert [e["event_id"] for e in late["entries"]] == [refused[0]["event_id"]]  # appended last, found by its time


async def test_a_refused_first_event_leaves_no_chain_yet_verify_reports_it(audit):
    history = OrgHistory("acme", T0)
    history.events[0]["data"]["name"] = "Acme\u0000"
    await published(audit, *history.events)
    refused = history.events[0]
    await passed(audit, "acme", 1)
    assert await the_dead_letter_of(audit, refused)
    verified = await audit.read_model.verify("acme")
    assert (verified["ok"], verified["missing"], verified["entries_checked"]) == (False, [[1, 1]], 0), verified


async def test_events_not_yet_consumed_are_pending_not_missing(audit):
    history = OrgHistory("acme", T0)
    history.invited(T0 + timedelta(days=1))
    await published(audit, *history.events)
    await audit.caught_up("acme", 2)
    async with audit.consumer.paused():
        newco = OrgHistory("newco", T0)
        await published(audit, history.invited(T0 + timedelta(days=2)), history.invited(T0 + timedelta(days=3)), *newco.events)
        verified = await audit.read_model.verify("acme")
        assert (verified["ok"], verified["missing"], verified["pending"], verified["entries_checked"]) == (True, [], 2, 2), (
            verified
        )
        unseen = await audit.read_model.verify("newco")
        assert (unseen["ok"], unseen["missing"], unseen["pending"], unseen["entries_checked"]) == (True, [], 1, 0), unseen
    await audit.caught_up("acme", 4)
    assert (await audit.read_model.verify("acme"))["pending"] == 0


async def test_an_existing_log_gets_its_recorded_sequences_from_its_raw_events_and_checkpoint(database_url):
    """Upgrading: `acme` lost sequence 3 to a dead letter; `bigco` had 1-5 purged by retention."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE SCHEMA audit; CREATE TABLE audit.positions (org_id text PRIMARY KEY, last_sequence bigint NOT NULL)"
        )
        await migrate(connection, "audit", MIGRATIONS[:2])
        kept = {"acme": [1, 2, 4], "bigco": [6, 7]}
        for org_id, sequences in kept.items():
            await connection.executemany(
                "INSERT INTO audit.raw_events VALUES ($1, $2, $3)",
                [(f"evt_{org_id}_{s}", org_id, json.dumps({"org_id": org_id, "sequence": s})) for s in sequences],
            )
        await connection.execute("INSERT INTO audit.positions VALUES ('acme', 4), ('bigco', 7), ('gone', 9)")
        await connection.execute("INSERT INTO audit.checkpoints VALUES ('bigco', 5, $1, now()), ('gone', 9, $1, now())", "a" * 64)
        await migrate(connection, "audit", MIGRATIONS)
        rows = await connection.fetch("SELECT org_id, sequence FROM audit.recorded_sequences ORDER BY org_id, sequence")
    finally:
        await connection.close()
    recorded: dict[str, list[int]] = {}
    for row in rows:
        recorded.setdefault(row["org_id"], []).append(row["sequence"])
    assert recorded == {"acme": [1, 2, 4], "bigco": [1, 2, 3, 4, 5, 6, 7], "gone": list(range(1, 10))}
