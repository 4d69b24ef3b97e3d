"""What auditors ask: search, verify the chain, fetch the raw event, export a time range."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from shared.contract import queries as q
from shared.errors import NotFound
from shared.paging import MAX_BIGINT, PAGE_BUDGET_BYTES, sequence_after, sequence_cursor
from shared.stream_heads import StreamHeads

from .entries import GENESIS_HASH, ChainWalk, rfc3339
from .projection import ENTRY_COLUMNS, JSON_COLUMNS

_encode = msgspec.json.Encoder().encode
# A search page or an export chunk also ends at shared.paging.PAGE_BUDGET_BYTES, counted as encoded
# in the reply (UTF-8 bytes, with the escapes JSON adds), so a reply stays under NATS's 1 MB payload.
EXPORT_CHUNK_ENTRIES = 2000


MAX_SEQ = MAX_BIGINT


def encode_cursor(seq: int) -> str:
    return sequence_cursor("seq", seq)


def decode_cursor(cursor: str | None) -> int:
    """The `seq` a cursor continues after (an empty cursor is the first page)."""
    return sequence_after("seq", cursor or None)


def entry_of(row: asyncpg.Record) -> dict[str, Any]:
    """The entry with its JSON decoded: for recomputing its hash."""
    entry = dict(row)
    entry["occurred_at"] = rfc3339(row["occurred_at"])
    for column in JSON_COLUMNS:
        entry[column] = json.loads(row[column])
    return entry


def entry_for_reply(row: asyncpg.Record) -> dict[str, Any]:
    """The entry with its JSON passed through as stored: replies need not decode it to encode it again."""
    entry = dict(row)
    entry["occurred_at"] = rfc3339(row["occurred_at"])
    for column in JSON_COLUMNS:
        entry[column] = msgspec.Raw(row[column].encode())
    return entry


class AuditReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str, stream_heads: StreamHeads) -> None:
        self.pool = pool
        self.schema = schema
        self.stream_heads = stream_heads

    async def search(self, query: q.AuditSearch) -> dict[str, Any]:
        """Each entry is encoded once: to count it against the page budget, and as it goes in the reply."""
        rows = await self._page(query.org_id, query.from_, query.to, decode_cursor(query.cursor), query.limit, query)
        entries: list[msgspec.Raw] = []
        size, last_seq = 0, 0
        for row in rows:
            encoded = _encode(entry_for_reply(row))
            size += len(encoded) + 1
            if entries and size > PAGE_BUDGET_BYTES:
                break
            entries.append(msgspec.Raw(encoded))
            last_seq = row["seq"]
        more = len(entries) < len(rows) or len(entries) == query.limit
        return {"entries": entries, "next_cursor": encode_cursor(last_seq) if entries and more else None}

    async def export(self, query: q.AuditExport) -> dict[str, Any]:
        rows = await self._page(query.org_id, query.from_, query.to, decode_cursor(query.cursor), EXPORT_CHUNK_ENTRIES)
        lines: list[tuple[int, str]] = []
        size = 0
        for row in rows:
            entry = entry_for_reply(row)
            line = _encode(entry).decode() if query.format == "ndjson" else _csv_line(entry)
            size += len(_encode(line)) + 1  # as it stands inside the reply's `data` string
            if lines and size > PAGE_BUDGET_BYTES:
                break
            lines.append((entry["seq"], line))
        full = len(lines) == EXPORT_CHUNK_ENTRIES or len(lines) < len(rows)
        header = _csv_header() if query.format == "csv" and not query.cursor else ""
        return {
            "format": query.format,
            "entries": len(lines),
            "data": header + "".join(line if query.format == "csv" else line + "\n" for _, line in lines),
            "next_cursor": encode_cursor(lines[-1][0]) if lines and full else None,
        }

    async def _page(
        self, org_id: str, start: datetime | None, end: datetime | None, after_seq: int, limit: int, filters: Any = None
    ) -> list[asyncpg.Record]:
        conditions, args = ["org_id = $1", "seq > $2"], [org_id, after_seq]

        def where(sql: str, value: Any) -> None:
            args.append(value)
            conditions.append(sql.format(f"${len(args)}"))

        action = filters.action if filters is not None else None
        prefix = action[:-1] if action and action.endswith(".*") else None
        async with self.pool.acquire() as connection:
            if start is not None or end is not None:
                window = await self._seq_window(connection, org_id, start, end)
                if window is None:
                    return []
                conditions.append(f"seq BETWEEN {int(window[0])} AND {int(window[1])}")
            if start is not None:
                where("occurred_at >= {}", start)
            if end is not None:
                where("occurred_at < {}", end)
            if action and prefix is None:
                where("action = {}", action)
            if filters is not None and filters.actor_id:
                where("actor->>'id' = {}", filters.actor_id)
            if filters is not None and filters.target_id:
                where("targets @> {}::jsonb", json.dumps([{"id": filters.target_id}]))
            pattern = None if prefix is None else prefix.replace("%", r"\%").replace("_", r"\_") + "%"
            narrowed = filters is not None and bool(filters.actor_id or filters.target_id)
            if pattern is not None and not narrowed:  # an actor or a target has indexes of its own
                args += [pattern, limit]
                sql = BY_EACH_ACTION_SQL.format(
                    schema=self.schema,
                    columns=", ".join(ENTRY_COLUMNS),
                    conditions=" AND ".join(conditions),
                    pattern=f"${len(args) - 1}",
                    limit=f"${len(args)}",
                )
                return await connection.fetch(sql, *args)
            if pattern is not None:
                where("action LIKE {}", pattern)
            args.append(limit)
            return await connection.fetch(
                f'SELECT {", ".join(ENTRY_COLUMNS)} FROM "{self.schema}".entries WHERE {" AND ".join(conditions)} '
                f"ORDER BY seq LIMIT ${len(args)}",
                *args,
            )

    async def _seq_window(
        self, connection: asyncpg.Connection, org_id: str, start: datetime | None, end: datetime | None
    ) -> tuple[int, int] | None:
        """The `seq` range that can hold entries of the time window (None: it holds none).

        While an organization's entries were appended in time order, `seq` and `occurred_at` rise
        together and the window's first and last entries bound it, so a sparse filter does not scan
        the whole history. Once one was appended out of order (an event retried from the dead
        letters), only the `occurred_at` conditions decide, and the range is the whole chain.
        One round trip: the chain's flag and both bounds."""
        bounds = await connection.fetchrow(SEQ_WINDOW_SQL.format(schema=self.schema), org_id, start, end)
        if bounds is None:
            return None
        if not bounds["in_time_order"]:
            return 0, MAX_SEQ
        first = bounds["first"] if start is not None else 0
        last = bounds["last"] if end is not None else MAX_SEQ
        if first is None or last is None:
            return None
        return first, last

    async def get_event(self, event_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as connection:
            body = await connection.fetchval(f'SELECT body FROM "{self.schema}".raw_events WHERE event_id = $1', event_id)
        if body is None:
            raise NotFound(f"no event {event_id} in the audit log")
        return json.loads(body)

    async def verify(self, org_id: str) -> dict[str, Any]:
        """Walks the chain from the last checkpoint (or the start) and names the first bad `seq`; then
        compares the membership sequences the chain took in with how far the consumer went.

        `missing`: sequence ranges the consumer passed (applied, or dead-lettered and skipped) that
        are not in the chain. `pending`: events on the stream the consumer has not reached yet."""
        stream_last = await self.stream_heads.last_sequence(org_id)
        async with self.pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            chain = await connection.fetchrow(f'SELECT * FROM "{self.schema}".chains WHERE org_id = $1', org_id)
            passed = (
                await connection.fetchval(f'SELECT last_sequence FROM "{self.schema}".positions WHERE org_id = $1', org_id) or 0
            )
            if chain is None and passed == 0 and stream_last == 0:
                raise NotFound(f"no audit log for organization {org_id}")
            verdict = await self._walk_chain(connection, org_id, chain) if chain else ChainWalk().end(0, GENESIS_HASH)
            missing = await connection.fetch(MISSING_RANGES_SQL.format(schema=self.schema), org_id, passed)
        ranges = [[row["first"], row["last"]] for row in missing]
        verdict["missing"] = ranges[:MISSING_RANGES_SHOWN]
        verdict["missing_events"] = sum(last - first + 1 for first, last in ranges)
        verdict["pending"] = max(0, stream_last - passed)
        if len(ranges) > MISSING_RANGES_SHOWN:
            verdict["missing_truncated"] = True
        if ranges and verdict["ok"]:
            verdict["ok"], verdict["reason"] = False, MISSING_EVENTS
        return verdict

    async def _walk_chain(self, connection: asyncpg.Connection, org_id: str, chain: asyncpg.Record) -> dict[str, Any]:
        checkpoint = await connection.fetchrow(f'SELECT * FROM "{self.schema}".checkpoints WHERE org_id = $1', org_id)
        walk = ChainWalk(checkpoint["seq"], checkpoint["hash"]) if checkpoint else ChainWalk()
        cursor = connection.cursor(
            f'SELECT {", ".join(ENTRY_COLUMNS)} FROM "{self.schema}".entries WHERE org_id = $1 ORDER BY seq',
            org_id,
            prefetch=5000,
        )
        async for row in cursor:
            broken = walk.step(entry_of(row))
            if broken is not None:
                return broken
        return walk.end(chain["last_seq"], chain["last_hash"])


SEQ_WINDOW_SQL = """
    SELECT c.in_time_order,
        (SELECT seq FROM "{schema}".entries WHERE org_id = $1 AND occurred_at >= $2::timestamptz
         ORDER BY occurred_at, seq LIMIT 1) AS first,
        (SELECT seq FROM "{schema}".entries WHERE org_id = $1 AND occurred_at < $3::timestamptz
         ORDER BY occurred_at DESC, seq DESC LIMIT 1) AS last
    FROM "{schema}".chains c WHERE c.org_id = $1
"""
# An action prefix (`api_key.*`) as one short index scan per action of the organization that
# matches it, merged by `seq`: a prefix matching a few percent of a long window otherwise scans
# it, or sorts every matching entry. The distinct actions come from (org_id, action, seq) one
# step at a time (a loose index scan), so an action stored by an older version is found as well.
BY_EACH_ACTION_SQL = """
    WITH RECURSIVE actions(action) AS (
        SELECT min(action) FROM "{schema}".entries WHERE org_id = $1
        UNION ALL
        SELECT (SELECT min(e.action) FROM "{schema}".entries e WHERE e.org_id = $1 AND e.action > actions.action)
        FROM actions WHERE actions.action IS NOT NULL
    )
    SELECT hit.* FROM actions CROSS JOIN LATERAL (
        SELECT {columns} FROM "{schema}".entries
        WHERE {conditions} AND action = actions.action ORDER BY seq LIMIT {limit}
    ) hit
    WHERE actions.action LIKE {pattern}
    ORDER BY hit.seq LIMIT {limit}
"""
MISSING_RANGES_SHOWN = 1000  # a reply stays well under NATS's payload limit
MISSING_EVENTS = "events the audit consumer passed are not in the chain (see missing; dead letters?)"
# The gaps in the recorded membership sequences 1..passed, as [first, last] ranges.
MISSING_RANGES_SQL = """
    SELECT previous + 1 AS first, sequence - 1 AS last FROM (
        SELECT sequence, lag(sequence, 1, 0::bigint) OVER (ORDER BY sequence) AS previous
        FROM "{schema}".recorded_sequences WHERE org_id = $1 AND sequence <= $2
    ) recorded WHERE sequence > previous + 1
    UNION ALL
    SELECT coalesce(max(sequence), 0) + 1, $2 FROM "{schema}".recorded_sequences WHERE org_id = $1 AND sequence <= $2
    HAVING coalesce(max(sequence), 0) < $2
    ORDER BY first
"""


def _csv_header() -> str:
    return _csv_row(ENTRY_COLUMNS)


def _csv_line(entry: dict[str, Any]) -> str:
    return _csv_row(bytes(entry[c]).decode() if c in JSON_COLUMNS else entry[c] for c in ENTRY_COLUMNS)


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
NEUTRALIZED = "'"


def neutralized(value: Any) -> Any:
    """The cell as text a spreadsheet will not evaluate: a leading `'` before a formula trigger.

    A value that already starts with `'` gets one too, so removing exactly one leading `'` from any
    cell that has one gives the original back."""
    if isinstance(value, str) and value.startswith((*FORMULA_TRIGGERS, NEUTRALIZED)):
        return NEUTRALIZED + value
    return value


def _csv_row(values: Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(neutralized(value) for value in values)
    return out.getvalue()
