"""JetStream publishing for the relay: a batch of messages, then every one of their acks.

What `JetStreamContext.publish_async` does per message (a semaphore, a random token, a future with its
done-callback, the ack decoded by `json` into a dataclass) costs about twice the publish itself; the relay
only needs to know that the whole batch is stored. So one reply subscription serves every publish, each
message's reply subject names it by a counter, the acks are decoded by msgspec, and a batch waits on one
future. A publish error (`{"error": ...}`), a reply with no stream behind it (status 503) or an ack that
does not decode fails the batch, as `publish_async`'s future did; so does a batch that is not acked
within the timeout.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

NO_RESPONDERS_STATUS = "503"


class PublishRefused(Exception):
    """JetStream did not store a message of the batch."""


class _Error(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    error: _Error | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


@dataclass(frozen=True)
class Message:
    subject: str
    body: bytes
    headers: dict[str, str]


@dataclass
class _Batch:
    unacked: int
    highest_seq: int = 0  # the highest stream sequence acked (a repeat's ack names the first copy's)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    tokens: list[str] = field(default_factory=list)

    def acked(self, seq: int) -> None:
        self.unacked -= 1
        self.highest_seq = max(self.highest_seq, seq)
        if self.unacked == 0 and not self.done.done():
            self.done.set_result(None)

    def refused(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(PublishRefused(why))


class StreamPublisher:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._tokens = itertools.count(1)
        self._waiting: dict[str, _Batch] = {}  # reply token -> the batch its message belongs to

    async def publish(self, messages: Sequence[Message], timeout: float) -> int:
        """Returns once the stream acked every message: the highest stream sequence of their acks (0 for
        none); raises PublishRefused, or TimeoutError."""
        if not messages:
            return 0
        if self._subscription is None:
            self._prefix = self._nc.new_inbox() + "."
            self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._received)
        batch = _Batch(len(messages))
        try:
            for message in messages:
                token = str(next(self._tokens))
                self._waiting[token] = batch
                batch.tokens.append(token)
                await self._nc.publish(message.subject, message.body, reply=self._prefix + token, headers=message.headers)
            async with asyncio.timeout(timeout):  # not `wait_for`: on 3.11 it can swallow a cancel
                await batch.done
            return batch.highest_seq
        finally:
            for token in batch.tokens:
                self._waiting.pop(token, None)

    async def _received(self, reply: Msg) -> None:
        batch = self._waiting.pop(reply.subject[len(self._prefix) :], None)
        if batch is None:
            return  # a batch given up on (timed out), or a repeat
        if reply.headers and reply.headers.get("Status") == NO_RESPONDERS_STATUS:
            batch.refused("no stream answers the subject")
            return
        try:
            ack = _decode_ack(reply.data)
        except msgspec.DecodeError:
            batch.refused(f"an ack that does not decode: {reply.data[:200]!r}")
            return
        if ack.error is not None:
            batch.refused(f"{ack.error.code} {ack.error.err_code}: {ack.error.description}")
        elif not ack.stream:
            batch.refused(f"an ack that names no stream: {reply.data[:200]!r}")
        else:
            batch.acked(ack.seq)
