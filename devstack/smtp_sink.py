"""An SMTP server that accepts every message and writes it to a directory as a .eml file.

Run as: python -m devstack.smtp_sink --port 2525 --dir var/mail
"""

import argparse
import asyncio
import logging
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import AnyStr

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from devstack.ports import LOOPBACK

log = logging.getLogger("smtp_sink")


# `<local@domain>` with a dot-atom local part and a dot-atom domain of ASCII letters, digits and
# hyphens: what every client of ours sends.
_PLAIN_ANGLE_ADDRESS = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>",
    re.ASCII,
)
# RFC 3030: `BDAT <chunk-size> [LAST]`, one space between
_BDAT_ARGUMENT = re.compile(r"([0-9]{1,18})(?: (LAST))?", re.ASCII | re.IGNORECASE)
# what aiosmtpd answers a command line over its limits, without calling the command's method
_COMMAND_LINE_TOO_LONG = "500 Command line too long"
_CHUNK_READ = 65536  # a chunk is read in pieces of at most this, so a huge size never sits in memory


class SinkSMTP(SMTP):
    """aiosmtpd's server, with a shortcut for plain addresses in MAIL FROM and RCPT TO.

    aiosmtpd parses each address with the `email` package's header parser (and defines a typing
    Protocol class on every call): about a fifth of the sink's CPU per message. A plain
    `<local@domain>`, then nothing or white space and the parameters, reads the same with a regular
    expression; anything else still goes through aiosmtpd's own parser (a hypothesis test holds
    both to the same answers)."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_ANGLE_ADDRESS.match(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain.group(1), arg[plain.end() :]
        parameters = rest.lstrip()  # the parser takes the white space after `>` as part of the address
        if (rest and rest[0] not in " \t") or parameters.startswith("("):  # not plain after all: a comment
            return super()._getaddr(arg)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, parameters

    # CHUNKING (RFC 3030): `BDAT <size> [LAST]` followed by exactly <size> bytes of the message, as
    # they are (no dot-stuffing, no final dot); the chunks of a transaction are joined and the last
    # one delivers the message through the handler's DATA hook, as DATA does, so a message stored
    # from BDAT is byte for byte the one stored from DATA. A refused BDAT still reads its bytes (the
    # client has written them behind the command); a BDAT whose size cannot be read closes the
    # connection after its 501, since the bytes behind it could only be read as commands. So does
    # any command line too long: aiosmtpd refuses it before a method runs (a BDAT's chunk would be
    # left unread, to be read as commands), and past its stream limit it has read the line in pieces,
    # so the verb is not known.

    _chunks: bytearray | None  # the transaction's message so far, BDAT after BDAT; None before a BDAT

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._chunks = None

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        if status == _COMMAND_LINE_TOO_LONG:
            await self._hang_up()

    @syntax("BDAT <size> [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        argument = _BDAT_ARGUMENT.fullmatch(arg or "")
        if argument is None:
            await self.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
            await self._hang_up()
            return
        size, last = int(argument.group(1)), argument.group(2) is not None
        chunk = await self._chunk(size)
        if chunk is None:
            return
        assert self.envelope is not None and self.session is not None
        if not self.session.host_name:
            await self.push("503 5.5.1 Error: send EHLO first")
            return
        if self._auth_required and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        chunks = self._chunks if self._chunks is not None else bytearray()
        if self.data_size_limit and len(chunks) + size > self.data_size_limit:
            self._set_post_data_state()  # the transaction is over, as after DATA's 552
            await self.push("552 5.3.4 Error: Too much mail data")
            return
        chunks += chunk
        self._chunks = chunks
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        self.envelope.content = self.envelope.original_content = bytes(chunks)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _chunk(self, size: int) -> bytes | None:
        """The `size` bytes behind a BDAT, kept while they fit the size limit (they are read
        whatever the reply will be); None if the connection is lost before they all came."""
        limit = self.data_size_limit
        keep = not limit or size <= limit
        pieces: list[bytes] = []
        remaining = size
        while remaining:
            try:
                piece = await self._reader.read(min(remaining, _CHUNK_READ))
            except asyncio.CancelledError:
                self._writer.close()
                raise
            if not piece:
                self._writer.close()
                return None
            remaining -= len(piece)
            if keep:
                pieces.append(piece)
        return b"".join(pieces)

    async def _hang_up(self) -> None:
        """Closes the connection, and ends this session before it reads another command (as QUIT
        does, but at once: the cancellation is taken here, not at the next command's reply)."""
        self._writer.close()
        assert self._handler_coroutine is not None
        self._handler_coroutine.cancel()
        await asyncio.sleep(0)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if self._chunks is not None:  # RFC 3030 2: DATA and BDAT never in one transaction
            await self.push("503 5.5.1 Error: BDAT and DATA in one transaction")
            return
        await super().smtp_DATA(arg)


class WriteEachMessageToFile:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # RFC 2920: aiosmtpd reads commands in order from a buffered stream and answers each in
        # order, so a client may send MAIL, RCPT and DATA together and then read the replies.
        # RFC 3030: BDAT is ours (`SinkSMTP.smtp_BDAT`).
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-CHUNKING", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        path = write_message(self.mail_dir, envelope_headers(envelope) + (envelope.original_content or b""))
        log.debug("%s -> %s saved as %s", envelope.mail_from, envelope.rcpt_tos, path.name)
        return "250 Message accepted for delivery"


def envelope_headers(envelope: Envelope) -> bytes:
    # The envelope is not part of the message; keep it for tests, as aiosmtpd's own handlers do.
    return (f"X-MailFrom: {envelope.mail_from}\r\nX-RcptTo: {', '.join(envelope.rcpt_tos)}\r\n").encode()


def write_message(mail_dir: Path, content: bytes) -> Path:
    """Write atomically, and durably before the 250 reply: a reader never sees half a message."""
    name = f"{time.time_ns()}-{uuid.uuid4().hex}.eml"
    temporary = mail_dir / f".{name}.tmp"
    with open(temporary, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    final = mail_dir / name
    os.replace(temporary, final)
    return final


async def serve(mail_dir: Path, port: int, host: str = LOOPBACK) -> None:
    mail_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the server starts
    loop = asyncio.get_running_loop()
    handler = WriteEachMessageToFile(mail_dir)
    server = await loop.create_server(
        lambda: SinkSMTP(handler, hostname="smtp-sink.localhost", enable_SMTPUTF8=True, loop=loop),
        host=host,
        port=port,
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    log.info("SMTP sink listening on %s:%d, writing to %s", host, port, mail_dir)
    await stopping.wait()
    server.close()
    await server.wait_closed()
    log.info("SMTP sink stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where .eml files are written")
    parser.add_argument("--host", default=LOOPBACK)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # aiosmtpd logs every command line and every envelope address at INFO: several lines per message
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(arguments.dir.resolve(), arguments.port, arguments.host))


if __name__ == "__main__":
    main()
