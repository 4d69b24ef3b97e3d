"""The SMTP sink takes BDAT (RFC 3030, CHUNKING): a message sent in chunks is stored byte for byte as
the same message sent by DATA; a refused BDAT still reads its bytes (they never run as commands);
a BDAT whose size cannot be read ends the connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devstack import SmtpSink
from devstack.smtp_sink import SinkSMTP, WriteEachMessageToFile
from tests.integration.test_smtp_sink_pipelining import RawClient, new_messages
from tests.servers import smtp_sink_in_scratch_dir

pytestmark = pytest.mark.integration

# what a command would look like, were the chunk's bytes read as commands
COMMANDS_INSIDE = b"RSET\r\nMAIL FROM:<mallory@evil.example>\r\nRCPT TO:<x@evil.example>\r\nDATA\r\n.\r\n"


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink_in_scratch_dir() as sink:
        yield sink


@pytest.fixture
async def client(sink: SmtpSink) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(sink)
    [ehlo] = await client.send_together(b"EHLO client.test")
    assert b"250-CHUNKING\r\n" in ehlo and b"250-PIPELINING\r\n" in ehlo
    yield client
    client.writer.close()


def envelope(recipient: bytes) -> list[bytes]:
    return [b"MAIL FROM:<no-reply@acme.io>", b"RCPT TO:<" + recipient + b">"]


async def by_data(client: RawClient, recipient: bytes, message: bytes) -> None:
    replies = await client.send_together(*envelope(recipient), b"DATA")
    assert [reply[:3] for reply in replies] == [b"250", b"250", b"354"]
    stuffed = (b"\r\n" + message).replace(b"\r\n.", b"\r\n..")[2:]
    client.writer.write(stuffed + b".\r\n")
    assert (await client.reply()).startswith(b"250")


async def by_bdat(client: RawClient, recipient: bytes, chunks: list[bytes]) -> list[bytes]:
    """Every command and chunk in one write; the replies' codes."""
    written = b"".join(command + b"\r\n" for command in envelope(recipient))
    for position, chunk in enumerate(chunks):
        written += b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if position == len(chunks) - 1 else b"") + chunk
    client.writer.write(written)
    return [(await client.reply())[:3] for _ in range(2 + len(chunks))]


def stored_for(sink: SmtpSink, recipient: bytes) -> list[bytes]:
    """The stored files (envelope headers and message) sent to `recipient`, oldest first."""
    return [raw for raw in (path.read_bytes() for path in sink.messages()) if raw.startswith(envelope_headers(recipient))]


def envelope_headers(recipient: bytes) -> bytes:
    return b"X-MailFrom: no-reply@acme.io\r\nX-RcptTo: " + recipient + b"\r\n"


def unique_recipient() -> bytes:
    return f"ada.{uuid.uuid4().hex[:12]}@acme.io".encode()


def cut(message: bytes, cuts: list[int]) -> list[bytes]:
    """`message` cut at the given offsets (a chunk may be empty)."""
    points = sorted(c % (len(message) + 1) for c in cuts)
    return [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]


# lines as DATA can carry them (at most 998 octets and CRLF), any octets inside: dots first, bare CR
# and LF, 8-bit (the sink takes 8BITMIME)
line = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b".", b"..", b".\r", b"\n.", b".QUIT", b"." * 998, b"x" * 998, b"\xff\xfe\x00\x80"]),
).filter(lambda text: b"\r\n" not in text and not text.endswith(b"\r"))
messages = st.lists(line, max_size=12).map(lambda lines: b"".join(text + b"\r\n" for text in lines))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=messages, cuts=st.lists(st.integers(min_value=0), max_size=4))
@example(message=b"", cuts=[])  # BDAT 0 LAST
@example(message=b".\r\n", cuts=[])  # DATA's end, as a line of the message
@example(message=COMMANDS_INSIDE, cuts=[6, 6, 30])
async def test_a_message_by_bdat_is_stored_as_the_same_message_by_data(sink, client, message, cuts):
    recipient = unique_recipient()
    await by_data(client, recipient, message)
    chunks = cut(message, cuts)
    assert await by_bdat(client, recipient, chunks) == [b"250"] * (2 + len(chunks))
    by_data_stored, by_bdat_stored = stored_for(sink, recipient)
    assert by_bdat_stored == by_data_stored == envelope_headers(recipient) + message


async def test_bdat_0_last_stores_an_empty_message(sink, client):
    recipient = unique_recipient()
    assert await by_bdat(client, recipient, [b""]) == [b"250", b"250", b"250"]
    assert stored_for(sink, recipient) == [envelope_headers(recipient)]


async def test_a_long_line_data_refuses_is_taken_by_bdat(sink, client):
    # BDAT counts octets, not lines (RFC 3030): no line length limit
    recipient = unique_recipient()
    message = b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n"
    assert await by_bdat(client, recipient, [message]) == [b"250"] * 3
    assert stored_for(sink, recipient) == [envelope_headers(recipient) + message]


async def test_a_bdat_after_a_refused_recipient_reads_its_chunk_and_is_refused(sink, client):
    before = set(sink.messages())
    client.writer.write(b"MAIL FROM:<no-reply@acme.io>\r\nRCPT TO:<ada@acme.io> NOTIFY=NEVER\r\n")
    client.writer.write(b"BDAT %d LAST\r\n" % len(COMMANDS_INSIDE) + COMMANDS_INSIDE + b"NOOP\r\n")
    replies = [(await client.reply())[:3] for _ in range(4)]
    assert replies == [b"250", b"555", b"503", b"250"]  # the chunk's bytes were not read as commands
    # the connection goes on: reset, and the next transaction is taken
    recipient = unique_recipient()
    assert await client.send_together(b"RSET") == [b"250 OK\r\n"]
    assert await by_bdat(client, recipient, [b"Subject: next\r\n\r\nhi\r\n"]) == [b"250"] * 3
    assert new_messages(sink, before) and len(new_messages(sink, before)) == 1
    assert len(stored_for(sink, recipient)) == 1


@pytest.mark.parametrize("envelope_sent", [[], [b"MAIL FROM:<no-reply@acme.io>"]], ids=["no MAIL", "no RCPT"])
async def test_a_bdat_without_mail_or_rcpt_is_503_and_its_chunk_is_read(sink, client, envelope_sent):
    before = set(sink.messages())
    client.writer.write(b"".join(c + b"\r\n" for c in envelope_sent) + b"BDAT 6\r\nNOOP\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    replies = [await client.reply() for _ in range(len(envelope_sent) + 3)]
    expected = "MAIL" if not envelope_sent else "RCPT"
    assert [reply[:3] for reply in replies] == [b"250"] * len(envelope_sent) + [b"503", b"503", b"250"]
    assert expected.encode() in replies[-2]
    assert new_messages(sink, before) == []


async def test_chunks_are_joined_and_answered_one_by_one(sink, client):
    recipient = unique_recipient()
    assert await client.send_together(*envelope(recipient)) == [b"250 OK\r\n", b"250 OK\r\n"]
    for chunk in (b"Subject: three\r\n", b"\r\nfirst li", b"ne\r\n"):
        client.writer.write(b"BDAT %d\r\n" % len(chunk) + chunk)
        assert (await client.reply()).startswith(b"250")
    assert stored_for(sink, recipient) == []  # nothing stored before the LAST chunk
    client.writer.write(b"BDAT 5 LAST\r\n.end\r")
    assert (await client.reply()).startswith(b"250")
    assert stored_for(sink, recipient) == [envelope_headers(recipient) + b"Subject: three\r\n\r\nfirst line\r\n.end\r"]


async def test_data_after_a_bdat_in_one_transaction_is_refused(sink, client):
    recipient = unique_recipient()
    client.writer.write(b"".join(c + b"\r\n" for c in envelope(recipient)) + b"BDAT 3\r\nabcDATA\r\nRSET\r\n")
    assert [(await client.reply())[:3] for _ in range(5)] == [b"250", b"250", b"250", b"503", b"250"]
    assert await by_bdat(client, recipient, [b"fresh\r\n"]) == [b"250"] * 3
    assert stored_for(sink, recipient) == [envelope_headers(recipient) + b"fresh\r\n"]  # nothing of `abc`


@pytest.mark.parametrize(
    "argument",
    [b"", b" x LAST", b" -1", b" 5 FIRST", b" 5 LAST more", b" 0x10", b" 99999999999999999999", b" 5  LAST", b" 5\tLAST"],
)
async def test_a_bdat_whose_size_cannot_be_read_ends_the_connection(sink, client, argument):
    before = set(sink.messages())
    recipient = unique_recipient()
    # the bytes behind the malformed BDAT would make a whole transaction, were they read as commands
    client.writer.write(b"".join(c + b"\r\n" for c in envelope(recipient)))
    client.writer.write(
        b"BDAT" + argument + b"\r\n" + b"".join(c + b"\r\n" for c in envelope(recipient)) + b"BDAT 3 LAST\r\nhi\n"
    )
    assert [(await client.reply())[:3] for _ in range(3)] == [b"250", b"250", b"501"]
    assert await asyncio.wait_for(client.reader.read(), timeout=10) == b""  # closed, nothing more answered
    assert new_messages(sink, before) == []


@pytest.mark.parametrize("padding", [b" " * 520, b" " * 2000], ids=["over the command limit", "over the stream limit"])
async def test_a_bdat_line_too_long_ends_the_connection_and_its_chunk_never_runs_as_commands(sink, client, padding):
    # aiosmtpd refuses the line with 500 before `smtp_BDAT` runs: the chunk behind it is never read
    # as a chunk, and were the connection kept, its bytes would be read as commands
    before = set(sink.messages())
    recipient = unique_recipient()
    client.writer.write(b"".join(c + b"\r\n" for c in envelope(recipient)))
    chunk = b"".join(c + b"\r\n" for c in envelope(recipient)) + b"DATA\r\nSubject: smuggled\r\n\r\nhi\r\n.\r\n"
    client.writer.write(b"BDAT %d LAST" % len(chunk) + padding + b"\r\n" + chunk)
    assert [(await client.reply())[:3] for _ in range(3)] == [b"250", b"250", b"500"]
    assert await asyncio.wait_for(client.reader.read(), timeout=10) == b""  # closed, nothing more answered
    assert new_messages(sink, before) == []


async def test_a_chunk_over_the_size_limit_is_read_and_refused(tmp_path: Path):
    """The size limit, on a sink of this process's own with a small one (the sink's is 32 MiB)."""
    handler = WriteEachMessageToFile(tmp_path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkSMTP(handler, data_size_limit=100, loop=loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = RawClient(*await asyncio.open_connection("127.0.0.1", port))
        assert (await client.reply()).startswith(b"220")
        await client.send_together(b"EHLO client.test")
        written = b"MAIL FROM:<a@acme.io>\r\nRCPT TO:<b@acme.io>\r\nBDAT 60\r\n" + b"x" * 60
        written += b"BDAT 60 LAST\r\n" + b"NOOP\r\n" * 10 + b"BDAT 500 LAST\r\n" + b"z" * 500 + b"NOOP\r\n"
        client.writer.write(written)
        replies = [(await client.reply())[:3] for _ in range(6)]
        assert replies == [b"250", b"250", b"250", b"552", b"503", b"250"]  # the transaction ended with the 552
        assert list(tmp_path.glob("*.eml")) == []  # noqa: ASYNC240 - a test's scratch directory
        client.writer.close()
    finally:
        server.close()
        await server.wait_closed()
