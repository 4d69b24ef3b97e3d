"""The notifier's own SMTP transaction (`smtp_session.py`) against real servers: the SMTP sink, and a
small scripted server for what the sink never does (refusals, no PIPELINING, a 354 after a refused
recipient, a dropped connection), by DATA and by BDAT (CHUNKING). Every failure is the exception aiosmtplib's `sendmail` raised for
it, so `deliveries.py` classifies it alike (permanent or temporary, with the same description)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib
import pytest

from devstack import SmtpSink
from services.notifier import smtp_session
from services.notifier.deliveries import describe, is_permanent
from services.notifier.mail import OutgoingEmail
from services.notifier.smtp import Mailer, parse_smtp_url
from services.notifier.smtp_session import _Connection

pytestmark = pytest.mark.integration

CONTENT = b"From: a@acme.io\r\nTo: ada@acme.io\r\nSubject: hi\r\n\r\n.leading dot\r\nJoin the team.\r\n"
EMAIL = OutgoingEmail(CONTENT, "no-reply@acme.io", "ada@acme.io")
CLOSE = b""  # in a script: close the connection instead of answering
NEVER = b"\x00never"  # in a script: never answer


@dataclass
class Script:
    """What the scripted server answers: a verb's reply (or CLOSE), the n-th time it is given."""

    pipelining: bool = True
    chunking: bool = False  # CHUNKING advertised (BDAT taken)
    replies: dict[str, list[bytes]] = field(default_factory=dict)
    byte_by_byte: bool = False  # every reply written a byte at a time

    def reply(self, verb: str, default: bytes) -> bytes:
        queued = self.replies.get(verb)
        return queued.pop(0) if queued else default


@dataclass
class Seen:
    commands: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # by DATA, or the chunks of a BDAT ... LAST, refused or not
    connections: int = 0
    transports: list[asyncio.Transport] = field(default_factory=list)  # the server's side of each connection
    sent_before_its_reply: list[bytes] = field(default_factory=list)  # a command after an unanswered one


class ScriptedSmtp(asyncio.Protocol):
    """With PIPELINING it holds its replies until the group's end (DATA, RSET, QUIT, a message), as
    RFC 2920 lets a server do: a client waiting for each reply would wait forever."""

    def __init__(self, script: Script, seen: Seen) -> None:
        self.script, self.seen = script, seen
        self.buffer = b""
        self.held: list[bytes] = []
        self.in_data = False
        self.refused = False
        self.chunk: tuple[int, bool] | None = None  # the bytes a BDAT has yet to bring, and its LAST
        self.chunks = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.seen.connections += 1
        self.seen.transports.append(transport)
        self.send(b"220 scripted.test ESMTP\r\n")

    def send(self, reply: bytes) -> None:
        if self.script.byte_by_byte:
            for position in range(len(reply)):
                self.transport.write(reply[position : position + 1])
        else:
            self.transport.write(reply)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        unanswered = False
        while not self.transport.is_closing():
            if self.chunk is not None:
                (left, last), taken = self.chunk, self.buffer[: self.chunk[0]]
                self.chunks, self.buffer = self.chunks + taken, self.buffer[len(taken) :]
                self.chunk = (left - len(taken), last)
                if left > len(taken):
                    return
                self.chunk = None
                if last:
                    self.seen.messages.append(self.chunks)
                    self.chunks = b""
                self.answer("BDAT", b"503 5.5.1 no valid recipients\r\n" if self.refused else b"250 2.0.0 queued\r\n", flush=last)
                continue
            if self.in_data:
                end = (b"\r\n" + self.buffer).find(b"\r\n.\r\n")  # a message may be empty
                if end == -1:
                    return
                message = (b"\r\n" + self.buffer)[2 : end + 2]
                self.seen.messages.append((b"\r\n" + message).replace(b"\r\n..", b"\r\n.")[2:])
                self.buffer, self.in_data = self.buffer[end + 3 :], False
                self.answer("END", b"250 2.0.0 queued\r\n", flush=True)
                continue
            line, found, rest = self.buffer.partition(b"\r\n")
            if not found:
                return
            self.buffer = rest
            if unanswered and not self.script.pipelining:
                self.seen.sent_before_its_reply.append(line)
            self.command(line)
            unanswered = bool(self.held) or not self.script.pipelining

    def command(self, line: bytes) -> None:
        self.seen.commands.append(line)
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].decode().upper()
        if verb == "EHLO":
            extensions = [b"SIZE 1000000", b"8BITMIME"] + ([b"PIPELINING"] if self.script.pipelining else [])
            extensions += [b"CHUNKING"] if self.script.chunking else []
            self.answer(verb, b"".join(b"250-" + e + b"\r\n" for e in [b"scripted.test", *extensions]) + b"250 HELP\r\n", True)
        elif verb == "MAIL":
            self.refused = False
            self.answer(verb, b"250 2.1.0 ok\r\n")
        elif verb == "RCPT":
            self.answer(verb, b"250 2.1.5 ok\r\n")
        elif verb == "DATA":
            self.answer(verb, b"554 5.5.1 no valid recipients\r\n" if self.refused else b"354 end with .\r\n", True)
        elif verb == "BDAT" and self.script.chunking:
            _, size, *last = line.split(b" ")
            self.chunk = (int(size), last == [b"LAST"])  # answered once its bytes have come
        elif verb == "RSET":
            self.refused = False
            self.answer(verb, b"250 2.0.0 reset\r\n", True)
        elif verb == "QUIT":
            self.answer(verb, b"221 bye\r\n", True)
            self.transport.close()
        else:
            self.answer(verb, b"502 5.5.2 what\r\n", True)

    def answer(self, verb: str, default: bytes, flush: bool = False) -> None:
        reply = self.script.reply(verb, default)
        if reply == CLOSE:
            self.flush()
            self.transport.close()
            return
        if reply == NEVER:
            self.flush()
            return
        if reply[:1] in (b"4", b"5") and verb in ("MAIL", "RCPT"):
            self.refused = True
        if verb == "DATA" and reply.startswith(b"354"):
            self.in_data = True
        self.held.append(reply)
        if flush or not self.script.pipelining:
            self.flush()

    def flush(self) -> None:
        held, self.held = b"".join(self.held), []
        if held:
            self.send(held)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[tuple[Mailer, Seen]]]]:
    """Starts a scripted server on a free port: a mailer to it, and what it saw."""
    servers: list[asyncio.Server] = []
    mailers: list[Mailer] = []

    async def serve(script: Script) -> tuple[Mailer, Seen]:
        seen = Seen()
        server = await asyncio.get_running_loop().create_server(lambda: ScriptedSmtp(script, seen), "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        mailer = Mailer(parse_smtp_url(f"smtp://127.0.0.1:{port}"), timeout=10)
        mailers.append(mailer)
        return mailer, seen

    yield serve
    for mailer in mailers:
        await mailer.close()
    for server in servers:
        server.close()


async def sent(mailer: Mailer, outgoing: OutgoingEmail = EMAIL) -> BaseException | None:
    """The error of one send, or None; a hang (a client waiting for a reply held back) fails the test."""
    try:
        async with asyncio.timeout(20):
            await mailer.send(outgoing)
    except TimeoutError:
        raise
    except Exception as error:
        return error
    return None


@pytest.mark.parametrize("pipelining", [True, False])
async def test_an_email_goes_out_whole_and_dot_stuffed(scripted, pipelining: bool) -> None:
    mailer, seen = await scripted(Script(pipelining=pipelining))
    for _ in range(3):
        assert await sent(mailer) is None
    assert seen.messages == [CONTENT] * 3
    assert seen.connections == 1
    transaction = [f"MAIL FROM:<no-reply@acme.io> SIZE={len(CONTENT)}".encode(), b"RCPT TO:<ada@acme.io>", b"DATA"]
    assert seen.commands[1:] == transaction * 3
    assert seen.sent_before_its_reply == []  # without PIPELINING, never a command ahead of a reply


@pytest.mark.parametrize("chunking", [False, True])
async def test_replies_cut_into_single_bytes_are_read_whole(scripted, chunking: bool) -> None:
    mailer, seen = await scripted(Script(byte_by_byte=True, chunking=chunking))
    assert await sent(mailer) is None
    assert await sent(mailer) is None
    assert seen.messages == [CONTENT] * 2


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("verb", "reply", "kind", "permanent"),
    [
        ("RCPT", b"550 5.1.1 no such user\r\n", aiosmtplib.SMTPRecipientsRefused, True),
        ("RCPT", b"450 4.2.1 mailbox busy\r\n", aiosmtplib.SMTPRecipientsRefused, False),
        ("MAIL", b"550 5.7.1 sender refused\r\n", aiosmtplib.SMTPSenderRefused, False),
        ("MAIL", b"451 4.3.0 try later\r\n", aiosmtplib.SMTPSenderRefused, False),
        ("DATA", b"554 5.3.4 not now\r\n", aiosmtplib.SMTPDataError, True),
        ("END", b"554 5.7.1 spam\r\n", aiosmtplib.SMTPDataError, True),
        ("END", b"452 4.3.1 disk full\r\n", aiosmtplib.SMTPDataError, False),
    ],
)
async def test_a_refusal_is_classified_as_aiosmtplib_raised_it(
    scripted, pipelining: bool, verb: str, reply: bytes, kind: type, permanent: bool
) -> None:
    mailer, seen = await scripted(Script(pipelining=pipelining, replies={verb: [reply]}))
    error = await sent(mailer)
    assert isinstance(error, kind)
    assert is_permanent(error) is permanent
    assert describe(error) == reply.decode().strip()
    # the envelope reset, as aiosmtplib's sendmail does; then the mailer closes, as after any failure
    assert seen.commands[-2:] == [b"RSET", b"QUIT"]
    if not pipelining:  # one at a time: nothing after the refused command
        assert seen.commands[-3].startswith(verb.encode()) or verb == "END"
    assert await sent(mailer) is None
    assert seen.connections == 2
    assert seen.messages[-1] == CONTENT
    assert len(seen.messages) == (2 if verb == "END" else 1)


async def test_a_354_after_a_refused_recipient_is_ended_with_a_lone_dot(scripted) -> None:
    mailer, seen = await scripted(Script(replies={"RCPT": [b"550 5.1.1 no such user\r\n"], "DATA": [b"354 go on\r\n"]}))
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPRecipientsRefused) and is_permanent(error)
    assert seen.commands[-3:] == [b"DATA", b"RSET", b"QUIT"]  # DATA ended at once by a lone dot
    assert seen.messages == [b""]  # nothing of the message was sent
    assert await sent(mailer) is None
    assert seen.messages[-1] == CONTENT


@pytest.mark.parametrize(("pipelining", "chunking"), [(True, False), (False, False), (True, True)])
async def test_a_refused_sender_then_a_closed_connection_is_the_refusal(scripted, pipelining: bool, chunking: bool) -> None:
    script = Script(pipelining=pipelining, chunking=chunking, replies={"MAIL": [b"421 4.3.2 shutting down\r\n"], "RCPT": [CLOSE]})
    mailer, _ = await scripted(script)
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPSenderRefused) and error.code == 421
    assert not is_permanent(error)


@pytest.mark.parametrize("chunking", [False, True])
async def test_a_connection_lost_midway_is_temporary(scripted, chunking: bool) -> None:
    mailer, seen = await scripted(Script(chunking=chunking, replies={"RCPT": [CLOSE]}))
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPServerDisconnected) and not is_permanent(error)
    assert await sent(mailer) is None  # a new connection
    assert seen.connections == 2


@pytest.mark.parametrize("chunking", [False, True])
async def test_an_idle_connection_the_server_dropped_is_replaced_once(scripted, chunking: bool) -> None:
    mailer, seen = await scripted(Script(chunking=chunking, replies={"MAIL": [b"250 ok\r\n", CLOSE]}))
    assert await sent(mailer) is None
    assert await sent(mailer) is None  # dropped on the reused connection: once more, on a new one
    assert seen.connections == 2
    assert seen.messages == [CONTENT, CONTENT]


@pytest.mark.parametrize(("chunking", "verb"), [(False, "MAIL"), (True, "MAIL"), (True, "BDAT")])
async def test_a_malformed_reply_is_aiosmtplibs_invalid_response(scripted, chunking: bool, verb: str) -> None:
    mailer, _ = await scripted(Script(chunking=chunking, replies={verb: [b"hello there\r\n"]}))
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPResponseException) and error.code == -1
    assert not is_permanent(error)


@pytest.mark.parametrize("chunking", [True, False])
async def test_emails_pipelined_through_the_real_sink_arrive_as_written(
    smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch, chunking: bool
) -> None:
    if not chunking:
        without_chunking(monkeypatch)
    writes = count_writes(monkeypatch)
    before = set(smtp_sink.messages())
    mailer = Mailer(parse_smtp_url(smtp_sink.url), timeout=10)
    try:
        for n in range(20):
            await mailer.send(OutgoingEmail(CONTENT.replace(b"hi", b"hi %d" % n), "no-reply@acme.io", f"ada{n}@acme.io"))
        assert mailer._session is not None and mailer._session.pipelining
        assert mailer._session.chunking is chunking
    finally:
        await mailer.close()
    assert len(writes) == 20 * (1 if chunking else 2) + 1  # one write (one round trip) an email with BDAT; then QUIT
    arrived = sorted(set(smtp_sink.messages()) - before)
    assert len(arrived) == 20
    received = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in arrived]
    assert {message["Subject"] for message in received} == {f"hi {n}" for n in range(20)}
    assert all(path.read_bytes().endswith(CONTENT.replace(b"hi", b"hi %d" % n)) for path, n in arrived_by_subject(arrived))


def arrived_by_subject(paths: list) -> list:
    """(path, n) for each message of subject `hi <n>`."""
    return [(path, int(email.message_from_bytes(path.read_bytes())["Subject"].split()[1])) for path in paths]


def without_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions opened from now on take CHUNKING as not advertised (they send DATA)."""
    supports = aiosmtplib.SMTP.supports_extension
    monkeypatch.setattr(aiosmtplib.SMTP, "supports_extension", lambda client, name: name != "chunking" and supports(client, name))


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the sessions write to their connections, one item a write."""
    writes: list[bytes] = []
    write = _Connection.write

    def counted(connection: _Connection, data: bytes, replies: int) -> None:
        writes.append(data)
        write(connection, data, replies)

    monkeypatch.setattr(_Connection, "write", counted)
    return writes


@pytest.mark.parametrize(("chunking", "verb"), [(False, "END"), (True, "BDAT")])
async def test_a_connection_lost_after_the_final_dot_sends_the_message_again_as_rfc_5321_asks(scripted, chunking, verb):
    # RFC 5321, 6.1: with no reply to the final dot (or to BDAT ... LAST) the client cannot know the
    # message was taken, and must not lose it; a duplicate is the price (services/notifier/README.md,
    # the duplicate window)
    mailer, seen = await scripted(Script(chunking=chunking, replies={verb: [b"250 2.0.0 queued\r\n", CLOSE]}))
    assert await sent(mailer) is None
    assert await sent(mailer) is None  # the reused connection dropped: sent again on a new one
    assert seen.messages == [CONTENT, CONTENT, CONTENT]


CHUNKED = [f"MAIL FROM:<no-reply@acme.io> SIZE={len(CONTENT)}".encode(), b"RCPT TO:<ada@acme.io>", b"BDAT %d LAST" % len(CONTENT)]


async def test_with_chunking_an_email_goes_out_in_one_bdat_as_it_is(scripted) -> None:
    mailer, seen = await scripted(Script(chunking=True))
    for _ in range(3):
        assert await sent(mailer) is None
    assert seen.messages == [CONTENT] * 3  # not dot-stuffed, no final dot: BDAT carries the bytes as they are
    assert seen.commands[1:] == CHUNKED * 3
    assert seen.connections == 1


async def test_chunking_without_pipelining_sends_data(scripted) -> None:
    mailer, seen = await scripted(Script(chunking=True, pipelining=False))
    assert await sent(mailer) is None
    assert seen.commands[-1] == b"DATA"
    assert seen.messages == [CONTENT]
    assert seen.sent_before_its_reply == []


async def test_content_without_crlf_line_ends_goes_out_as_data_would_deliver_it(scripted) -> None:
    mailer, seen = await scripted(Script(chunking=True))
    bare = b"Subject: hi\n\n.one\rtwo\r\nthree"  # bare LF and CR, no final line end
    assert await sent(mailer, OutgoingEmail(bare, "no-reply@acme.io", "ada@acme.io")) is None
    as_data_delivers = b"Subject: hi\r\n\r\n.one\r\ntwo\r\nthree\r\n"
    assert seen.messages == [as_data_delivers]
    assert seen.commands[-1] == b"BDAT %d LAST" % len(as_data_delivers)


@pytest.mark.parametrize(
    ("verb", "reply", "kind", "permanent"),
    [
        ("RCPT", b"550 5.1.1 no such user\r\n", aiosmtplib.SMTPRecipientsRefused, True),
        ("RCPT", b"450 4.2.1 mailbox busy\r\n", aiosmtplib.SMTPRecipientsRefused, False),
        ("MAIL", b"550 5.7.1 sender refused\r\n", aiosmtplib.SMTPSenderRefused, False),
        ("MAIL", b"451 4.3.0 try later\r\n", aiosmtplib.SMTPSenderRefused, False),
        ("BDAT", b"554 5.7.1 spam\r\n", aiosmtplib.SMTPDataError, True),
        ("BDAT", b"452 4.3.1 disk full\r\n", aiosmtplib.SMTPDataError, False),
        ("BDAT", b"354 what\r\n", aiosmtplib.SMTPDataError, False),
    ],
)
async def test_with_chunking_a_refusal_is_classified_as_aiosmtplib_raised_it(
    scripted, verb: str, reply: bytes, kind: type, permanent: bool
) -> None:
    mailer, seen = await scripted(Script(chunking=True, replies={verb: [reply]}))
    error = await sent(mailer)
    assert isinstance(error, kind)
    assert is_permanent(error) is permanent
    assert describe(error) == reply.decode().strip()
    # the chunk was read as a chunk (RFC 3030: even when refused), then the envelope reset and the mailer closed
    assert seen.commands[1:] == [*CHUNKED, b"RSET", b"QUIT"]
    assert seen.messages == [CONTENT]
    assert await sent(mailer) is None
    assert seen.connections == 2
    assert seen.messages == [CONTENT, CONTENT]


async def test_a_bdat_taken_after_a_refused_recipient_is_still_the_refusal(scripted) -> None:
    mailer, seen = await scripted(
        Script(chunking=True, replies={"RCPT": [b"550 5.1.1 no such user\r\n"], "BDAT": [b"250 ok\r\n"]})
    )
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPRecipientsRefused) and is_permanent(error)
    assert seen.commands[-3:] == [CHUNKED[-1], b"RSET", b"QUIT"]


@pytest.mark.parametrize(("pipelining", "chunking", "verb"), [(True, False, "END"), (False, False, "END"), (True, True, "BDAT")])
@pytest.mark.parametrize("surplus", [b"250 2.0.0 queued, again\r\n", b"25"], ids=["a reply", "bytes of one"])
async def test_more_replies_than_commands_close_the_connection_and_none_is_taken(scripted, pipelining, chunking, verb, surplus):
    # Which reply answers which command is lost: the email's own replies are not trusted (it is
    # tried again, a duplicate at worst, as after a connection lost after the final dot), and a reply
    # left queued would answer the next email's commands: its refusal never read, it taken as sent.
    script = Script(
        pipelining=pipelining, chunking=chunking, replies={verb: [b"250 2.0.0 queued\r\n" + surplus, b"554 5.7.1 rejected\r\n"]}
    )
    mailer, seen = await scripted(script)
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPResponseException) and error.code == -1
    assert not is_permanent(error)
    error = await sent(mailer)  # on a new connection, and its own reply is read
    assert isinstance(error, aiosmtplib.SMTPDataError) and error.code == 554 and is_permanent(error)
    assert seen.connections == 2
    assert seen.messages == [CONTENT, CONTENT]


@pytest.mark.parametrize("chunking", [False, True])
@pytest.mark.parametrize("surplus", [b"250 2.0.0 queued, again\r\n", b"25"], ids=["a reply", "bytes of one"])
async def test_a_connection_the_server_wrote_to_unasked_carries_no_more_email(scripted, chunking, surplus):
    mailer, seen = await scripted(
        Script(chunking=chunking, replies={"BDAT": [b"250 2.0.0 queued\r\n", b"554 5.7.1 rejected\r\n"]})
    )
    assert await sent(mailer) is None
    seen.transports[-1].write(surplus)  # after the email's replies were taken: owed to no command
    for _ in range(1000):  # until the client has read it (bounded: a client that drops it fails below)
        if mailer._session is None or not mailer._session.is_connected:
            break
        await asyncio.sleep(0.01)
    assert mailer._session is not None and not mailer._session.is_connected
    error = await sent(mailer)  # on a new connection, without an error of the old one
    if chunking:
        assert isinstance(error, aiosmtplib.SMTPDataError) and error.code == 554
    else:
        assert error is None
    assert seen.connections == 2


@pytest.mark.parametrize(("chunking", "verb"), [(False, "END"), (False, "DATA"), (True, "BDAT")])
async def test_a_refusal_whose_rset_is_never_answered_is_still_the_refusal(scripted, monkeypatch, chunking, verb):
    # without a timeout of RSET's own the sender's would end the send: a TimeoutError, temporary,
    # and a refused email tried again and again instead of failed
    monkeypatch.setattr(smtp_session, "RESET_TIMEOUT_SECONDS", 0.2)
    mailer, seen = await scripted(Script(chunking=chunking, replies={verb: [b"554 5.7.1 spam\r\n"], "RSET": [NEVER]}))
    error = await sent(mailer)
    assert isinstance(error, aiosmtplib.SMTPDataError) and error.code == 554 and is_permanent(error)
    assert seen.commands[-1] == b"RSET"  # then the connection closed, not QUIT on it
    assert await sent(mailer) is None
    assert seen.connections == 2
