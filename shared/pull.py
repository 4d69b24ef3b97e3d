"""Fetching a batch from a JetStream pull consumer: one request, one inbox, the batch ended by the server.

nats-py's `PullSubscription.fetch` waits for each message through `next_msg`, which makes a task,
an `asyncio.wait_for` and a `uuid4` per message, and sends two requests when the consumer is idle.
Here a fetch is one `CONSUMER.MSG.NEXT` request with `no_wait` and `expires`: the server delivers what
the consumer has, up to the batch, and ends the request with a 404/408 status as soon as nothing is
left; when it has nothing, the request waits (up to `expires`) for the first message. The messages
arrive through one subscription's callback; a request's statuses come on a reply subject of its own,
so a late status of an earlier request never ends a later one. A message that arrives after its
request was given up on (a connection lost mid-batch) is kept for the next fetch, not dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
from nats.aio.msg import Msg

STATUS = "Status"
HEARTBEAT = "100"  # idle heartbeats and flow control: not the end of anything
# No messages (404), the request's time is up (408), a conflict such as a leadership change or the
# consumer deleted (409): the request is over, what it delivered is the batch.
ENDED = frozenset({"404", "408", "409"})
# The client waits this much longer than the server's `expires`, for the 408 to arrive.
GRACE_SECONDS = 0.5


class FetchRefused(Exception):
    """The server answered a pull request with an error status (say 400, a malformed request)."""


class BatchPull:
    """Batches from the consumer `consumer` of `stream`, fetched one at a time."""

    def __init__(self, nc: nats.NATS, stream: str, consumer: str, api_prefix: str = "$JS.API") -> None:
        self.nc = nc
        self.next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = nc.new_inbox()
        self._subscription: Any = None
        self._requests = 0
        self._reply = ""  # the reply subject of the request under way; "" when none is
        self._wanted = 0
        self._collected: list[Msg] = []
        self._done: asyncio.Future[list[Msg]] | None = None
        self._refusal: str | None = None
        # Requests ended here while the server still holds them open (reply subject -> the loop time by
        # which the server ends them at the latest): it may deliver to them first, before a later request.
        self._open_elsewhere: dict[str, float] = {}
        self._expires_at = 0.0  # of the request under way

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(f"{self.inbox}.*", cb=self._receive)

    async def stop(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages in delivery order; none when `timeout` passes without any.

        Returns more than `batch` only when that many came, late, for a request given up on."""
        if self._subscription is None:
            raise RuntimeError("BatchPull.fetch before start")
        if self._collected:  # late for a request given up on or cut short: theirs is the next batch, at once
            messages, self._collected = self._collected, []
            return messages
        messages = await self._request(batch, timeout)
        refusal, self._refusal = self._refusal, None
        if refusal is not None and not messages:
            raise FetchRefused(refusal)
        return messages

    def cut_short(self) -> None:
        """Ends the fetch under way, if any, now, with what it has delivered so far (perhaps nothing).
        The server keeps the request open until it expires and may still deliver to it, first in line:
        such a message is the next fetch's, handed over as soon as it comes."""
        if self._under_way():
            self._delivering_elsewhere()  # forget those the server has ended by now
            self._open_elsewhere[self._reply] = self._expires_at
        self._end()

    async def _request(self, batch: int, timeout: float) -> list[Msg]:
        """The batch as it stood when the request ended: later arrivals are the next fetch's."""
        self._requests += 1
        self._reply = f"{self.inbox}.{self._requests}"
        self._wanted = batch
        loop = asyncio.get_running_loop()
        self._done = done = loop.create_future()
        self._expires_at = loop.time() + timeout + GRACE_SECONDS
        body = {"batch": batch - len(self._collected), "expires": int(timeout * 1e9), "no_wait": True}
        try:
            await self.nc.publish(self.next_subject, json.dumps(body).encode(), reply=self._reply)
            async with asyncio.timeout(timeout + GRACE_SECONDS):
                return await done
        except TimeoutError:
            if done.done() and not done.cancelled():  # ended in the instant the timeout fired
                return done.result()
            messages, self._collected = self._collected, []  # no status came (a connection lost, say)
            return messages
        finally:
            self._reply, self._done = "", None

    async def _receive(self, message: Msg) -> None:
        headers = message.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            self._collected.append(message)
            if len(self._collected) >= self._wanted:
                self._end()
            elif self._open_elsewhere and self._under_way() and self._delivering_elsewhere():
                # for an earlier request, most likely: deliver it now, as this request may get nothing
                # until that one is over; this one stays open on the server in turn
                self._open_elsewhere[self._reply] = self._expires_at
                self._end()
        elif status == HEARTBEAT:
            return
        elif message.subject != self._reply:  # the end of a request given up on or cut short
            if status in ENDED:
                self._open_elsewhere.pop(message.subject, None)
        elif status in ENDED:
            self._end()
        else:
            self._refusal = f"{status} {headers.get('Description', '') if headers else ''}".strip()
            self._end()

    def _under_way(self) -> bool:
        return self._done is not None and not self._done.done()

    def _delivering_elsewhere(self) -> bool:
        """Whether a request ended here may still be open on the server (those past their end are forgotten)."""
        now = asyncio.get_running_loop().time()
        for reply, until in list(self._open_elsewhere.items()):
            if until <= now:
                del self._open_elsewhere[reply]
        return bool(self._open_elsewhere)

    def _end(self) -> None:
        if self._done is not None and not self._done.done():
            batch, self._collected = self._collected, []
            self._done.set_result(batch)
