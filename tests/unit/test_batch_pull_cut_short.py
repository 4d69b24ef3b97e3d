"""BatchPull with `cut_short` at random points and late deliveries to cut requests, against a model server
(written by review).

A scripted JetStream-like server: pull requests wait in FIFO order; each pending message goes to the
head request; a request filled to its batch leaves with no status; a no_wait request that delivered
something and finds nothing pending gets 404; a request past its expiry gets 408. A fetcher task fetches
in a loop while the driver publishes, cuts the fetch short, lets time pass, or drops statuses.
The promise checked: every delivered message is returned exactly once, in delivery order; and
`_open_elsewhere` never holds a request the server has ended for longer than its expiry.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared.pull
from shared.pull import BatchPull
from tests.unit.test_batch_pull import FakeMsg

TIMEOUT = 0.03


@dataclass
class Request:
    reply: str
    remaining: int
    expires_at: float
    delivered: int = 0


@dataclass
class Server:
    inbox: str = "_INBOX.m"
    callback: Any = None
    published: int = 0
    next_out: int = 1
    waiting: list[Request] = field(default_factory=list)
    drop_statuses: bool = False
    delivered_order: list[int] = field(default_factory=list)
    requests: int = 0

    def new_inbox(self) -> str:
        return self.inbox

    async def subscribe(self, subject: str, cb: Any) -> Any:
        self.callback = cb
        return self

    async def unsubscribe(self) -> None:
        self.callback = None

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        body = json.loads(payload)
        self.requests += 1
        loop = asyncio.get_running_loop()
        self.waiting.append(Request(reply, body["batch"], loop.time() + body["expires"] / 1e9))
        loop.call_soon(lambda: asyncio.ensure_future(self.pump()))

    async def status(self, reply: str, code: str) -> None:
        if not self.drop_statuses:
            await self.callback(FakeMsg(reply, b"", {"Status": code, "Description": "x"}))

    async def pump(self) -> None:
        now = asyncio.get_running_loop().time()
        for request in [r for r in self.waiting if r.expires_at <= now]:
            self.waiting.remove(request)
            await self.status(request.reply, "408")
        while self.waiting and self.next_out <= self.published:
            head = self.waiting[0]
            n = self.next_out
            self.next_out += 1
            head.remaining -= 1
            head.delivered += 1
            self.delivered_order.append(n)
            await self.callback(FakeMsg("membership.events.org.X", str(n).encode(), {"Nats-Msg-Id": "x"}))
            if head.remaining == 0:
                self.waiting.remove(head)
            await asyncio.sleep(0)  # let the client run between deliveries
        if self.next_out > self.published:
            for request in [r for r in self.waiting if r.delivered > 0]:
                self.waiting.remove(request)
                await self.status(request.reply, "404")

    async def add(self, count: int) -> None:
        self.published += count
        await self.pump()


action = st.one_of(
    st.tuples(st.just("pub"), st.integers(1, 8)),
    st.tuples(st.just("cut"), st.just(0)),
    st.tuples(st.just("yield"), st.integers(1, 5)),
    st.tuples(st.just("sleep"), st.integers(1, 40)),  # milliseconds
    st.tuples(st.just("drop-statuses"), st.booleans().map(int)),
)


async def play(batch: int, actions: list[tuple[str, int]]) -> dict[str, Any]:
    server = Server()
    pull = BatchPull(server, "S", "C")  # type: ignore[arg-type]
    await pull.start()
    returned: list[int] = []
    sizes: list[int] = []
    most_open = 0
    stop = asyncio.Event()

    async def fetcher() -> None:
        nonlocal most_open
        while not stop.is_set():
            got = await pull.fetch(batch, timeout=TIMEOUT)
            returned.extend(int(m.data) for m in got)
            if got:
                sizes.append(len(got))
            most_open = max(most_open, len(pull._open_elsewhere))
            await asyncio.sleep(0)

    task = asyncio.create_task(fetcher())
    for kind, value in actions:
        if kind == "pub":
            await server.add(value)
        elif kind == "cut":
            pull.cut_short()
        elif kind == "yield":
            for _ in range(value):
                await asyncio.sleep(0)
        elif kind == "sleep":
            await asyncio.sleep(value / 1000)
            await server.pump()
        else:
            server.drop_statuses = bool(value)
    server.drop_statuses = False
    # drain: let every request expire and every message be delivered and fetched
    for _ in range(200):
        await asyncio.sleep(TIMEOUT / 3)
        await server.pump()
        if server.next_out > server.published and len(returned) == server.published and not pull._collected:
            break
    stop.set()
    pull.cut_short()
    await task
    returned.extend(int(m.data) for m in pull._collected)
    return {
        "returned": returned,
        "published": server.published,
        "delivered": server.delivered_order,
        "sizes": sizes,
        "most_open": most_open,
        "requests": server.requests,
    }


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.pull, "GRACE_SECONDS", 0.01)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.lists(action, min_size=1, max_size=25))
def test_cut_short_anywhere_every_message_once_in_order(batch: int, actions: list[tuple[str, int]]) -> None:
    outcome = asyncio.run(play(batch, actions))
    assert outcome["delivered"] == list(range(1, outcome["published"] + 1))
    assert outcome["returned"] == outcome["delivered"], outcome
    # _open_elsewhere holds at most the requests made in one expiry window
    assert outcome["most_open"] <= outcome["requests"]


def test_requests_cut_short_are_forgotten_once_the_server_has_ended_them_even_with_batches_of_one() -> None:
    """Found by review: a cut request the server then fills gets no status, and with batches of one no
    fetch ever ends short, so nothing pruned the entry: one more per pause, for good."""

    async def scenario() -> int:
        server = Server()
        pull = BatchPull(server, "S", "C")  # type: ignore[arg-type]
        await pull.start()
        for _ in range(200):
            idle = asyncio.create_task(pull.fetch(1, timeout=0.01))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            pull.cut_short()  # a pause while the consumer idles in a fetch
            await idle
            await server.add(1)  # the cut request gets its one message: filled, no status
            assert len(await pull.fetch(1, timeout=0.01)) == 1
            await asyncio.sleep(0.012)  # past the cut request's end
        return len(pull._open_elsewhere)

    assert asyncio.run(scenario()) <= 2
