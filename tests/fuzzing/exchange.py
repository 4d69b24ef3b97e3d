"""Sends many requests with a bounded number in flight and keeps every reply each one got.

Each request has its own reply subject under one wildcard subscription, so a second reply to
any of them is seen whenever it arrives, not only while its request is waited for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats
from nats.aio.msg import Msg

from .corpus import FuzzRequest


@dataclass
class Exchange:
    """The replies each request got, by index; those without one had none within the timeout."""

    replies: dict[int, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    unanswered: list[int] = field(default_factory=list)


async def send_all(nc: nats.NATS, requests: Sequence[FuzzRequest], in_flight: int = 32, timeout: float = 15.0) -> Exchange:
    exchange = Exchange()
    inbox = f"_FUZZ.{uuid.uuid4().hex}"
    first_reply: dict[int, asyncio.Future[None]] = {}
    slots = asyncio.Semaphore(in_flight)

    async def on_reply(msg: Msg) -> None:
        index = int(msg.subject.rsplit(".", 1)[1])
        exchange.replies[index].append(msg.data)
        waiting = first_reply.get(index)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    subscription = await nc.subscribe(f"{inbox}.*", cb=on_reply)

    async def send(request: FuzzRequest) -> None:
        async with slots:
            first_reply[request.index] = asyncio.get_running_loop().create_future()
            await nc.publish(request.subject, request.body, reply=f"{inbox}.{request.index}")
            try:
                await asyncio.wait_for(first_reply[request.index], timeout)
            except TimeoutError:
                exchange.unanswered.append(request.index)

    try:
        await asyncio.gather(*(send(request) for request in requests))
        await _late_replies_settle(nc)
    finally:
        await subscription.unsubscribe()
    return exchange


async def _late_replies_settle(nc: nats.NATS, window: float = 1.0) -> None:
    """One bounded window for a second reply still on its way, after every first one has come."""
    await nc.flush()
    await asyncio.sleep(window)
    await nc.flush()
