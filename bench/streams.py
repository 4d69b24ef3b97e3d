"""Synthetic history for benchmarks: a fresh MEMBERSHIP stream holding only what a benchmark publishes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable

import nats
from nats.js.errors import NotFoundError

from shared import subjects
from shared.bus import declare_streams

Publication = tuple[str, str, bytes]  # subject, event id, body


async def publish_fresh(nats_url: str, publications: Iterable[Publication], expected: int) -> float:
    """Replaces the stream with these events, acks gathered per thousand; returns the seconds it took."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(subjects.STREAM)
        await declare_streams(nats_url)
        started = time.perf_counter()
        acks = []
        for subject, event_id, body in publications:
            acks.append(await js.publish_async(subject, body, headers={"Nats-Msg-Id": event_id}))
            if len(acks) == 1000:
                await asyncio.gather(*acks)
                acks = []
        await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
        stored = (await js.stream_info(subjects.STREAM)).state.messages
    finally:
        await nc.close()
    if stored != expected:
        raise RuntimeError(f"published {expected} events, the stream holds {stored}")
    return elapsed
