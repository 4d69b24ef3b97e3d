"""`SMTP_URL`: where the invitation emails go, how to talk to that server, and the `Mailer` that does.

    smtp://host:port                     plain SMTP (the local sink; default smtp://127.0.0.1:2525)
    smtp+starttls://user:pass@host:587   STARTTLS required, then LOGIN/PLAIN with the credentials
    smtps://user:pass@host:465           TLS from the first byte (implicit TLS)

User and password are percent-decoded. The password never appears in a log line: log `redacted()`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from .mail import OutgoingEmail
from .smtp_session import Session

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


class InvalidSmtpUrl(ValueError):
    pass


@dataclass(frozen=True)
class SmtpUrl:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    @property
    def starttls(self) -> bool:
        return self.scheme == "smtp+starttls"

    def redacted(self) -> str:
        """The URL without its password, for logs."""
        user = f"{self.username}:***@" if self.username and self.password else f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"

    def client_options(self, timeout: float) -> dict[str, Any]:
        """Keyword arguments for `aiosmtplib.SMTP`."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "use_tls": self.implicit_tls,
            # plain smtp:// never upgrades on its own; smtp+starttls:// refuses a server without STARTTLS
            "start_tls": bool(self.starttls),
            "timeout": timeout,
        }


def parse_smtp_url(url: str) -> SmtpUrl:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as bad:
        raise InvalidSmtpUrl(f"SMTP_URL is not a URL: {bad}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidSmtpUrl(f"SMTP_URL scheme must be one of {', '.join(DEFAULT_PORTS)}, not {scheme!r}")
    if not parts.hostname:
        raise InvalidSmtpUrl("SMTP_URL has no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise InvalidSmtpUrl("SMTP_URL has a password but no user")
    return SmtpUrl(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], username, password)


class Mailer:
    """One SMTP connection, kept while there is mail to send and closed when idle. aiosmtplib opens
    it (connect, EHLO, STARTTLS, login); the emails go through our own `Session` on it."""

    def __init__(self, url: SmtpUrl, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._session: Session | None = None

    async def send(self, email: OutgoingEmail) -> None:
        reused = self._session is not None and self._session.is_connected
        try:
            await self._send(email)
        except aiosmtplib.SMTPServerDisconnected:
            await self.close()
            if not reused:
                raise
            await self._send(email)  # the server dropped an idle connection; once more, on a new one
        except BaseException:
            await self.close()
            raise

    async def _send(self, email: OutgoingEmail) -> None:
        if self._session is None or not self._session.is_connected:
            client = aiosmtplib.SMTP(**self.url.client_options(self.timeout))
            await client.connect()
            self._session = await Session.take_over(client)
        # the envelope is given, never extracted from the headers; the bytes are 7-bit, as written
        await self._session.send(email.envelope_from, email.envelope_to, email.content)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is None or not session.is_connected:
            if session is not None:
                session.close()
            return
        try:
            async with asyncio.timeout(2):  # not wait_for: it can drop a cancel on 3.11
                await session.quit()
        except Exception:
            session.close()
