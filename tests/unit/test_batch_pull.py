"""`BatchPull` against a scripted server: what each fetch returns, whatever the server sends back.

Each round is one fetch; the script says what the server delivers in answer to its request: data
messages, heartbeats, statuses that belong to an earlier request, and how it ends (a 404/408/409 status,
the batch filled, an error status, or silence: a connection lost mid-batch). Messages that come after a
fetch has ended belong to the next one. The model: every message is returned exactly once, in delivery
order, by the first fetch that ends after it arrived; a fetch that finds messages already arrived returns
them at once, without a request; a fetch ends at its own end status, at the batch count, or at its
timeout, and never at a status of another request."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared.pull
from shared.pull import BatchPull, FetchRefused


@dataclass
class FakeMsg:
    subject: str
    data: bytes = b""
    headers: dict[str, str] | None = None


@dataclass
class Round:
    batch: int
    before: int  # data messages delivered before the request (late ones of an earlier request)
    answer: list[str]  # "msg", "heartbeat", "stale-404", "stale-408"
    ending: str  # "404", "408", "409", "400", "silence"
    after: int = 0  # data messages the server sends after the ending (they belong to the next fetch)


@dataclass
class ScriptedServer:
    """Plays a round's answer into the subscription's callback when the fetch publishes its request."""

    inbox: str = "_INBOX.test"
    callback: Any = None
    answer: Round | None = None  # what the next request gets; None: no request is expected
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    replies: list[str] = field(default_factory=list)

    def new_inbox(self) -> str:
        return self.inbox

    async def subscribe(self, subject: str, cb: Any) -> Any:
        assert subject == f"{self.inbox}.*"
        self.callback = cb
        return self

    async def unsubscribe(self) -> None:
        self.callback = None

    async def data(self, count: int) -> None:
        for _ in range(count):
            self.delivered += 1
            await self.callback(FakeMsg("membership.events.org.X", str(self.delivered).encode(), {"Nats-Msg-Id": "x"}))

    async def status(self, reply: str, code: str) -> None:
        await self.callback(FakeMsg(reply, b"", {"Status": code, "Description": "test"}))

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        assert subject == "$JS.API.CONSUMER.MSG.NEXT.S.C"
        self.requests.append(json.loads(payload))
        self.replies.append(reply)
        current, self.answer = self.answer, None
        assert current is not None, "a request where none was expected"
        for step in current.answer:
            if step == "msg":
                await self.data(1)
            elif step == "heartbeat":
                await self.status(reply, "100")
            elif self.replies[:-1]:  # a status of an earlier request, arriving late
                await self.status(self.replies[0], step.removeprefix("stale-"))
        if current.ending != "silence":
            await self.status(reply, current.ending)
        await self.data(current.after)


def rounds() -> st.SearchStrategy[list[Round]]:
    one = st.builds(
        Round,
        batch=st.integers(1, 6),
        before=st.integers(0, 3),
        answer=st.lists(st.sampled_from(["msg", "msg", "msg", "heartbeat", "stale-404", "stale-408"]), max_size=10),
        ending=st.sampled_from(["404", "408", "409", "400", "silence"]),
        after=st.integers(0, 2),
    )
    return st.lists(one, min_size=1, max_size=6)


async def play(script: list[Round]) -> None:
    server = ScriptedServer()
    pull = BatchPull(server, "S", "C")  # type: ignore[arg-type]
    await pull.start()
    waiting: list[int] = []  # the model: what has arrived and was not yet returned
    returned: list[int] = []
    requested = 0
    for current in script:
        await server.data(current.before)
        waiting += range(server.delivered - current.before + 1, server.delivered + 1)
        before_fetch = server.delivered
        server.answer = None if waiting else current
        outcome: list[int] | str
        try:
            outcome = [int(m.data) for m in await pull.fetch(current.batch, timeout=0.001)]
        except FetchRefused:
            outcome = "refused"
        answered = server.delivered - before_fetch
        if waiting:  # late ones of an earlier request: returned at once, no request at all
            assert len(server.requests) == requested
            assert outcome == waiting
            waiting = []
            returned += outcome
            continue
        requested += 1
        assert len(server.requests) == requested
        assert server.requests[-1]["batch"] == current.batch
        assert server.requests[-1]["no_wait"] is True
        # The answer's data messages, up to the batch, end the fetch; the rest wait for the next one.
        arrived = list(range(before_fetch + 1, before_fetch + answered + 1))
        # Without an end status, what comes after still belongs to this request, until its timeout.
        data_in_answer = current.answer.count("msg") + (current.after if current.ending == "silence" else 0)
        room = current.batch - len(waiting)
        taken = arrived[: min(room, data_in_answer)]
        expected = waiting + taken
        waiting = [n for n in arrived if n not in taken]
        if data_in_answer < room and current.ending == "400" and not expected:
            assert outcome == "refused"
        else:
            assert outcome == expected
            returned += expected
    # Nothing lost, nothing twice, in delivery order.
    assert returned + waiting == list(range(1, server.delivered + 1))


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.pull, "GRACE_SECONDS", 0.0)


@settings(max_examples=300, deadline=None)
@given(rounds())
def test_every_message_is_returned_once_in_order_by_the_fetch_it_arrived_for(script: list[Round]) -> None:
    asyncio.run(play(script))


def test_a_status_of_an_earlier_request_does_not_end_the_current_one() -> None:
    script = [Round(batch=3, before=0, answer=["msg"], ending="silence"), Round(3, 0, ["stale-408", "msg", "msg"], "404")]
    asyncio.run(play(script))


def test_an_error_status_is_raised_only_when_nothing_came() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        pull = BatchPull(server, "S", "C")  # type: ignore[arg-type]
        await pull.start()
        server.answer = Round(2, 0, [], "400")
        with pytest.raises(FetchRefused, match="400"):
            await pull.fetch(2, timeout=1.0)
        server.answer = Round(2, 0, ["msg"], "400")
        assert len(await pull.fetch(2, timeout=1.0)) == 1

    asyncio.run(scenario())
