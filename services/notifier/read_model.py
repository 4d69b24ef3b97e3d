"""What the notifier answers: the delivery log of an organization, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from shared.contract import queries as q
from shared.errors import NotFound
from shared.paging import sequence_after, sequence_cursor

from .store import DeliveryStore

# A page stops before its deliveries pass this many bytes of JSON, whatever `limit` says: the reply
# stays well under NATS's default max_payload (1 MB) even when every row carries a long error.
PAGE_BYTES = 700_000
_CURSOR_LABEL = "deliveries"
_encode = msgspec.json.Encoder().encode


def encode_cursor(sequence: int) -> str:
    return sequence_cursor(_CURSOR_LABEL, sequence)


def decode_cursor(cursor: str | None) -> int:
    """The sequence after which the page starts; 0 for the first page."""
    return sequence_after(_CURSOR_LABEL, cursor)


@dataclass(frozen=True)
class DeliveriesPage:
    deliveries: list[dict[str, Any]]
    next_cursor: str | None


class NotifierReadModel:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema
        self.store = DeliveryStore(schema)

    async def deliveries(self, query: q.DeliveriesQuery) -> DeliveriesPage:
        """Oldest first, by the event's sequence in the organization: a delivery recorded while a
        client pages lands after the pages it has read, so every delivery is seen exactly once."""
        after = decode_cursor(query.cursor)
        async with self.pool.acquire() as connection:
            known = await connection.fetchval(f'SELECT 1 FROM "{self.schema}".organizations WHERE org_id = $1', query.org_id)
            if known is None:
                raise NotFound(f"the notifier knows no organization {query.org_id}")  # an Identifier: bounded
            rows = await self.store.page(connection, query.org_id, after, query.limit + 1)
        page: list[tuple[int, dict[str, Any]]] = []
        size = 0
        for row in rows[: query.limit]:
            delivery = dict(row)
            sequence = delivery.pop("sequence")
            size += len(_encode(delivery)) + 1
            if page and size > PAGE_BYTES:
                break
            page.append((sequence, delivery))
        more = len(page) < len(rows)
        return DeliveriesPage([delivery for _, delivery in page], encode_cursor(page[-1][0]) if more else None)

    async def counts(self) -> dict[str, int]:
        async with self.pool.acquire() as connection:
            return await self.store.counts(connection)
