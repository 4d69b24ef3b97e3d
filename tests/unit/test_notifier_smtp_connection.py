"""`smtp_session._Connection`: pipelined replies waited for together, whatever segments the server
writes them in, and a break found after the replies that did come."""

from __future__ import annotations

import asyncio
import itertools

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.smtp_session import _Connection

REPLIES = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go ahead\r\n"


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


class CountingWaits(_Connection):
    """Counts the times the waiting task is woken."""

    wakes = 0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self.wakes += 1
        super()._wake()


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.lists(st.integers(min_value=0), max_size=8))
def test_three_replies_in_any_segments_are_taken_with_one_wake(cuts):
    async def run() -> None:
        connection = CountingWaits(Transport())  # type: ignore[arg-type]
        connection.write(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", 3)
        waiting = asyncio.create_task(connection.replies(3))
        await asyncio.sleep(0)
        for piece in pieces(REPLIES, cuts):
            connection.data_received(piece)
            await asyncio.sleep(0)
        replies = await waiting
        assert [reply.code for reply in replies if reply is not None] == [250, 250, 354]
        assert connection.wakes == 1, "woken for each reply the server wrote apart"

    asyncio.run(run())


async def test_a_break_after_the_first_reply_leaves_the_others_missing():
    connection = _Connection(Transport())  # type: ignore[arg-type]
    connection.write(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", 3)
    waiting = asyncio.create_task(connection.replies(3))
    await asyncio.sleep(0)
    connection.data_received(b"550 no\r\n")
    await asyncio.sleep(0)
    assert not waiting.done(), "taken before every reply had come"
    connection.connection_lost(None)
    first, *missing = await waiting
    assert first is not None and first.code == 550 and missing == [None, None]
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await connection.reply()
