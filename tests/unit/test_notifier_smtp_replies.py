"""SMTP replies read as aiosmtplib reads them, however the stream is cut into reads."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib import SMTPResponseException
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import given
from hypothesis import strategies as st

from services.notifier.smtp_replies import Reply, ReplyReader

pytestmark = pytest.mark.unit

codes = st.integers(min_value=200, max_value=599)
texts = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)
line_ends = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def replies(draw: st.DrawFn) -> bytes:
    """One reply on the wire: continuation lines `ddd-text`, then `ddd text` or a bare `ddd`."""
    code = draw(codes)
    lines = draw(st.lists(texts, min_size=1, max_size=4))
    wire = b"".join(b"%d-%s%s" % (code, text.encode(), draw(line_ends)) for text in lines[:-1])
    last = b"%d" % code + (b" " + lines[-1].encode() if lines[-1] or draw(st.booleans()) else b"")
    return wire + last + draw(line_ends)


def aiosmtplibs_reading(wire: bytes) -> list[Reply]:
    """The oracle: aiosmtplib's own parser, reply by reply."""
    protocol = SMTPProtocol(asyncio.new_event_loop())
    protocol._buffer.extend(wire)
    read = []
    while (response := protocol._read_response_from_buffer()) is not None:
        read.append(Reply(response.code, response.message))
    return read


@given(st.lists(replies(), min_size=1, max_size=6), st.data())
def test_replies_cut_anywhere_read_as_aiosmtplib_reads_them(wires: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(wires)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = ReplyReader()
    read: list[Reply] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        read += reader.feed(stream[start:end])
    assert read == aiosmtplibs_reading(stream)
    assert len(read) == len(wires)


@given(replies(), st.binary(max_size=30).filter(lambda tail: b"\n" not in tail))
def test_an_unfinished_reply_waits_for_the_rest(wire: bytes, tail: bytes) -> None:
    reader = ReplyReader()
    assert reader.feed(wire[:-1]) == []
    assert reader.feed(wire[-1:] + tail) == aiosmtplibs_reading(wire)


def test_a_multi_line_reply_is_one_reply_with_every_line() -> None:
    reader = ReplyReader()
    assert reader.feed(b"250-sink.test\r\n250-PIPELINING\r\n") == []
    assert reader.feed(b"250 HELP\r\n354 go ahead\r\n") == [Reply(250, "sink.test\nPIPELINING\nHELP"), Reply(354, "go ahead")]


@pytest.mark.parametrize("wire", [b"OK\r\n", b"2x0 nope\r\n", b"250-fine\r\nhello\r\n", b"\r\n"])
def test_a_line_without_a_code_is_a_malformed_reply(wire: bytes) -> None:
    with pytest.raises(SMTPResponseException) as malformed:
        ReplyReader().feed(wire)
    assert malformed.value.code == -1
    assert "Malformed SMTP response line" in malformed.value.message


def test_a_reply_without_end_is_refused_before_it_fills_memory() -> None:
    reader = ReplyReader()
    with pytest.raises(SMTPResponseException, match="Response too long"):
        for _ in range(100):
            reader.feed(b"250-" + b"x" * 1000 + b"\r\n")
