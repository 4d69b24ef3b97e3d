"""An SMTP server that accepts every message and writes it to a directory as a .eml file.

Run as: python -m devstack.smtp_sink --port 2525 --dir var/mail
"""

import argparse
import asyncio
import logging
import os
import signal
import time
import uuid
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from devstack.ports import LOOPBACK

log = logging.getLogger("smtp_sink")


class WriteEachMessageToFile:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        path = write_message(self.mail_dir, envelope_headers(envelope) + (envelope.original_content or b""))
        log.info("%s -> %s saved as %s", envelope.mail_from, envelope.rcpt_tos, path.name)
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
        lambda: SMTP(handler, hostname="smtp-sink.localhost", enable_SMTPUTF8=True, loop=loop),
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
    asyncio.run(serve(arguments.dir.resolve(), arguments.port, arguments.host))


if __name__ == "__main__":
    main()
