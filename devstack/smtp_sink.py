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

from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.ports import LOOPBACK

log = logging.getLogger("smtp_sink")


# `<local@domain>` with a dot-atom local part and a dot-atom domain of ASCII letters, digits and
# hyphens: what every client of ours sends.
_PLAIN_ANGLE_ADDRESS = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>",
    re.ASCII,
)


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


class WriteEachMessageToFile:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # RFC 2920: aiosmtpd reads commands in order from a buffered stream and answers each in
        # order, so a client may send MAIL, RCPT and DATA together and then read the replies.
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

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
