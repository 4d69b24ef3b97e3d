"""Everything a request could have changed, taken whole so that two takes compare with `==`."""

from __future__ import annotations

from typing import Any

import asyncpg
import nats

from shared import subjects
from teamctl.client import Client

from .corpus import PROJECTIONS

READ_MODEL_QUERIES = [
    ("membership", "get_organization", {}),
    ("membership", "members", {"limit": 1000}),
    ("membership", "invitations", {"limit": 1000}),
    ("membership", "api_keys", {"limit": 1000}),
    ("billing", "charges", {"limit": 1000}),
    ("billing", "invoices", {"limit": 1000}),
    ("billing", "upcoming_invoice", {}),
    ("audit", "search", {"limit": 1000}),
    ("audit", "verify", {}),
    ("notifier", "deliveries", {"limit": 1000}),
]


async def stream_state(nc: nats.NATS) -> dict[str, Any]:
    js = nc.jetstream()
    state: dict[str, Any] = {}
    for stream in (subjects.STREAM, subjects.DEAD_LETTER_STREAM):
        try:
            info = (await js.stream_info(stream)).state
            state[stream] = (info.messages, info.last_seq)
        except nats.js.errors.NotFoundError:
            state[stream] = None
    return state


async def database_state(database_url: str) -> dict[str, tuple[int, str]]:
    """Every table of every schema: its row count and a digest of its rows."""
    connection = await asyncpg.connect(database_url)
    try:
        tables = await connection.fetch(
            """SELECT table_schema, table_name FROM information_schema.tables
               WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
               ORDER BY 1, 2"""
        )
        state = {}
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            row = await connection.fetchrow(
                "SELECT count(*) AS rows, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS digest "
                f"FROM {name} t"
            )
            state[f"{schema}.{table}"] = (row["rows"], row["digest"])
        return state
    finally:
        await connection.close()


async def read_models(client: Client, org_id: str) -> dict[str, Any]:
    """What each service answers about the team."""
    answers = {}
    for service, name, extra in READ_MODEL_QUERIES:
        reply = await client.query(service, name, org_id=org_id, **extra)
        assert reply["ok"], (service, name, reply)
        answers[f"{service}.{name}"] = reply["result"]
    answers["membership.get_organization"]["seats"].pop("quoted_at")  # the moment of asking, not state
    return answers


async def projected_positions(database_url: str, org_id: str) -> dict[str, int | None]:
    connection = await asyncpg.connect(database_url)
    try:
        return {
            schema: await connection.fetchval(f'SELECT last_sequence FROM "{schema}".positions WHERE org_id = $1', org_id)
            for schema in PROJECTIONS
        }
    finally:
        await connection.close()


async def deliveries_in_progress(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval("SELECT count(*) FROM notifier.deliveries WHERE status IN ('pending', 'sending')")
    finally:
        await connection.close()
