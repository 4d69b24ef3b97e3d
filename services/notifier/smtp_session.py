"""One email's SMTP transaction of our own, on a connection aiosmtplib opened.

aiosmtplib connects, says EHLO, upgrades with STARTTLS and logs in; then `Session.take_over` takes
the connection's transport and sends the email itself (and none of aiosmtplib's per-message work:
its protocol reads one reply per write, normalises the line ends of the whole message twice and
parses both addresses again):

- when the server advertises CHUNKING (RFC 3030) and PIPELINING (RFC 2920): MAIL, RCPT and
  `BDAT <size> LAST` with the message behind it, as it is, in one write; one round trip per email;
- else with PIPELINING: MAIL, RCPT and DATA in one write, then the dot-stuffed message and its
  final dot: two round trips; without it, one command at a time.

A failure is raised as the exception aiosmtplib's `sendmail` raises for it, so `deliveries.py`
classifies it alike: `SMTPSenderRefused` (MAIL), `SMTPRecipientsRefused` (RCPT), `SMTPDataError`
(DATA or BDAT, or the message's final reply), `SMTPResponseException(-1, ...)` for a malformed reply
and `SMTPServerDisconnected` for a lost connection. The replies are weighed in the order of the
commands, as if they had been sent one at a time: a refused MAIL is the error even when the server
then drops the connection, or refuses the BDAT that follows it (as it must: RFC 3030 has it read the
chunk's bytes and refuse it). After a refusal the envelope is reset (RSET), as aiosmtplib does
(within `RESET_TIMEOUT_SECONDS`, or the connection is closed: the refusal stays the error). A reply,
or bytes of one, beyond those owed to the commands written is `SMTPResponseException(-1, ...)` too:
none of the queued replies is taken, and the connection is closed (never reused with a stale reply).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections import deque
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.email import quote_address

from .smtp_replies import INVALID_RESPONSE, Reply, ReplyReader

OK = 250
WILL_FORWARD = 251
START_INPUT = 354
# how long RSET after a refusal may take: past it the connection is closed and the refusal raised (a
# server that never answers RSET must not turn a permanent refusal into the sender's timeout)
RESET_TIMEOUT_SECONDS = 5.0
# what an address must not hold to go into a command line as it is
_NOT_IN_AN_ENVELOPE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")


class _Connection(asyncio.Protocol):
    """The transport's protocol once the session holds it: replies parsed as they arrive, queued
    in order, and taken one at a time by whoever waits for them."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport: asyncio.Transport | None = transport
        self._reader = ReplyReader()
        self._replies: deque[Reply] = deque()
        self._expected = 0  # replies owed to commands written and not yet taken
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0  # replies the waiter waits for: it is woken once they have all come
        self._broken: BaseException | None = None

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self._broken is None

    def write(self, commands: bytes, replies: int) -> None:
        if self.transport is None or not self.is_connected:
            raise SMTPServerDisconnected("Connection lost")
        self._expected += replies
        self.transport.write(commands)

    async def reply(self) -> Reply:
        (reply,) = await self.replies(1)
        if reply is None:
            assert self._broken is not None
            raise self._broken
        return reply

    async def replies(self, count: int) -> list[Reply | None]:
        """The next `count` replies, waited for together (one wake-up, not one per reply the server
        wrote apart); None for each that never came because the connection broke (or was malformed)."""
        self._wanted = count
        while len(self._replies) < count and self._broken is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        taken = min(count, len(self._replies))
        self._expected -= taken
        return [self._replies.popleft() for _ in range(taken)] + [None] * (count - taken)

    def data_received(self, data: bytes) -> None:
        if self._broken is not None:
            return
        try:
            self._replies.extend(self._reader.feed(data))
        except aiosmtplib.SMTPResponseException as malformed:
            self._break(malformed)
            return
        if len(self._replies) > self._expected or (len(self._replies) == self._expected and self._reader.pending):
            # More than was owed: which reply answers which command is lost, and a reply kept would
            # answer the next email's command. None of the queued replies is taken; the connection
            # is closed, and the next email goes out on a new one.
            self._replies.clear()
            self._break(SMTPResponseException(INVALID_RESPONSE, "Unexpected reply: more replies than commands sent"))
            self.close()
            return
        if len(self._replies) >= self._wanted:
            self._wake()

    def eof_received(self) -> bool:
        self._break(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._break(lost)
        self.transport = None

    def _break(self, error: BaseException) -> None:
        if self._broken is None:
            self._broken = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Session:
    """An SMTP connection past its greeting, EHLO, STARTTLS and login, sending one email at a time."""

    def __init__(self, connection: _Connection, *, pipelining: bool, size: bool, chunking: bool = False) -> None:
        self._connection = connection
        self.pipelining = pipelining
        self.size = size
        self.chunking = chunking and pipelining  # BDAT only pays when it goes in one write with MAIL and RCPT

    @classmethod
    async def take_over(cls, client: aiosmtplib.SMTP) -> Session:
        """The connection `client` opened, greeted with EHLO (HELO if refused; as its `sendmail`
        does), from now on ours alone (`client` is done with)."""
        try:
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
            transport = cast(asyncio.Transport | None, client.transport)
            if transport is None or not client.is_connected:
                raise SMTPServerDisconnected("Connection lost")
        except BaseException:
            client.close()
            raise
        connection = _Connection(transport)
        transport.set_protocol(connection)
        return cls(
            connection,
            pipelining=client.supports_extension("pipelining"),
            size=client.supports_extension("size"),
            chunking=client.supports_extension("chunking"),
        )

    @property
    def is_connected(self) -> bool:
        return self._connection.is_connected

    async def send(self, sender: str, recipient: str, content: bytes) -> None:
        """`content` (7-bit, CRLF line ends, as `mime.py` writes it) to `recipient`, an address
        `headers.mailable_address` accepted; raises as aiosmtplib's `sendmail` would."""
        if _NOT_IN_AN_ENVELOPE_ADDRESS.search(recipient):
            raise ValueError("the recipient cannot go into RCPT TO as it is")
        content = _crlf_lines(content)  # the message the server takes, whether by BDAT or by DATA
        mail = b"MAIL FROM:" + _quoted_sender(sender) + (b" SIZE=%d" % len(content) if self.size else b"")
        rcpt = b"RCPT TO:<" + recipient.encode("ascii") + b">"
        if self.chunking:
            await self._send_in_one_chunk(mail, rcpt, content, sender, recipient)
            return
        replies = await self._exchange([mail, rcpt, b"DATA"])
        refusal = _refusal(replies, sender, recipient)
        if refusal is not None:
            if len(replies) == 3 and replies[2].code == START_INPUT:  # a server that took DATA regardless
                await self._exchange([b"."])
            await self._reset()
            raise refusal
        self._connection.write(_dot_stuffed(content) + b".\r\n", 1)
        final = await self._connection.reply()
        if final.code != OK:
            await self._reset()
            raise aiosmtplib.SMTPDataError(final.code, final.message)

    async def _send_in_one_chunk(self, mail: bytes, rcpt: bytes, content: bytes, sender: str, recipient: str) -> None:
        """MAIL, RCPT and `BDAT <size> LAST` with the message behind it (no dot-stuffing, no final
        dot: the server takes exactly `len(content)` bytes), in one write; then the three replies."""
        written = mail + b"\r\n" + rcpt + b"\r\n" + b"BDAT %d LAST\r\n" % len(content) + content
        replies = await self._pipelined(written, 3)
        refusal = _refusal(replies, sender, recipient, taken=OK)
        if refusal is not None:
            await self._reset()
            raise refusal

    async def _exchange(self, commands: list[bytes]) -> list[Reply]:
        """The replies to `commands`: all written at once with PIPELINING, else one at a time until
        one is refused. A lost connection or a malformed reply after a refusal raises the refusal."""
        if self.pipelining:
            return await self._pipelined(b"".join(command + b"\r\n" for command in commands), len(commands))
        replies_one_by_one: list[Reply] = []
        for command in commands:
            self._connection.write(command + b"\r\n", 1)
            try:
                replies_one_by_one.append(await self._connection.reply())
            except aiosmtplib.SMTPException:
                if replies_one_by_one and _refused(replies_one_by_one[-1], len(replies_one_by_one) - 1):
                    return replies_one_by_one
                raise
            if _refused(replies_one_by_one[-1], len(replies_one_by_one) - 1):
                return replies_one_by_one
        return replies_one_by_one

    async def _pipelined(self, written: bytes, count: int) -> list[Reply]:
        """The replies to the `count` commands `written` holds, written at once; weighed in order:
        a refusal before a lost connection or a malformed reply is the error, not the break."""
        self._connection.write(written, count)
        replies = await self._connection.replies(count)
        for position, reply in enumerate(replies):
            if reply is None:
                if position and _refused(cast(Reply, replies[position - 1]), position - 1):
                    return cast(list[Reply], replies[:position])
                return cast(list[Reply], [await self._connection.reply()])  # raises the break
        return cast(list[Reply], replies)

    async def _reset(self) -> None:
        """RSET after a refusal, so the connection can carry the next email; its own failure is not
        the error (the refusal is), and a lost connection is found by the next send."""
        if not self._connection.is_connected:
            return
        try:
            async with asyncio.timeout(RESET_TIMEOUT_SECONDS):
                self._connection.write(b"RSET\r\n", 1)
                await self._connection.reply()
        except (ConnectionError, aiosmtplib.SMTPException, TimeoutError):
            self._connection.close()

    async def quit(self) -> None:
        try:
            self._connection.write(b"QUIT\r\n", 1)
            await self._connection.reply()
        finally:
            self._connection.close()

    def close(self) -> None:
        self._connection.close()


def _refused(reply: Reply, position: int, taken: int = START_INPUT) -> bool:
    """Whether the reply to the `position`-th command of MAIL, RCPT, DATA (or BDAT, taken with
    `taken` = 250) refuses it."""
    if position == 0:
        return reply.code != OK
    if position == 1:
        return reply.code not in (OK, WILL_FORWARD)
    return reply.code != taken


def _refusal(replies: list[Reply], sender: str, recipient: str, taken: int = START_INPUT) -> aiosmtplib.SMTPException | None:
    """The error of the first refused command of MAIL, RCPT, DATA (or BDAT, taken with `taken` =
    250), as aiosmtplib raises it (DATA's for BDAT), or None."""
    for position, reply in enumerate(replies):
        if not _refused(reply, position, taken):
            continue
        if position == 0:
            return aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        if position == 1:
            return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)])
        return aiosmtplib.SMTPDataError(reply.code, reply.message)
    return None


@functools.lru_cache(maxsize=8)
def _quoted_sender(sender: str) -> bytes:
    """`<address>` as aiosmtplib writes MAIL FROM (one setting: parsed once)."""
    quoted = quote_address(sender).encode("ascii")
    if _NOT_IN_AN_ENVELOPE_ADDRESS.search(quoted[1:-1].decode("ascii")):
        raise ValueError("MAIL_FROM's address cannot go into MAIL FROM as it is")
    return quoted


def _crlf_lines(content: bytes) -> bytes:
    """`content` with CRLF line ends and a final CRLF, as DATA carries it. `mime.py` writes it so;
    aiosmtplib's rewriting is kept only for bytes that are not (counting is cheaper)."""
    crlfs = content.count(b"\r\n")
    if content.count(b"\r") == crlfs == content.count(b"\n") and content.endswith(b"\r\n"):
        return content
    return aiosmtplib.protocol.normalize_message_line_endings(content)


def _dot_stuffed(content: bytes) -> bytes:
    """Every line that starts with `.` gets another (RFC 5321 4.5.2)."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed
