"""The invitation email: subject, text and HTML parts from templates, the accept link with its token.

Org names, inviter names and emails are user input: the HTML template autoescapes them, and they
reach headers only as encoded words we write ourselves (`headers.py`). The envelope's one recipient
is the stored address, never one read back from a header. The token is computed here, at send time,
from the server secret; it lives only in the message handed to SMTP, never in the database or a log
line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path

import jinja2

from shared.invitations import accept_link, invitation_token

from .headers import display_text, mailable_address, set_text_header

MESSAGE_ID_DOMAIN = "team-members.notifier"


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, with each header's class made once. The stock one makes a new
    class (`type(...)`) every time a header is set, read or written: an eighth of composing an email."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = super().__getitem__(name)
        return made


# `email.policy.default` in every rule; only the registry differs.
MAIL_POLICY = policy.default.clone(header_factory=_HeaderClasses())

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_NOT_IN_AN_ID = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Invitation:
    """What one delivery row says about the email to write."""

    event_id: str
    invitation_id: str
    recipient: str
    org_name: str
    inviter: str
    expires_at: datetime
    resent: bool


@dataclass(frozen=True)
class OutgoingEmail:
    """The message and its envelope, given to SMTP as they are: nothing is re-read from headers."""

    message: EmailMessage
    envelope_from: str
    envelope_to: str


def message_id(event_id: str) -> str:
    """The same for every attempt of one delivery, so a duplicate send is recognisable as one."""
    return f"<{_NOT_IN_AN_ID.sub('_', event_id)}@{MESSAGE_ID_DOMAIN}>"


def subject(invitation: Invitation) -> str:
    return f"{display_text(invitation.inviter)} invited you to join {display_text(invitation.org_name)} on Team Members"


def envelope_sender(mail_from: str) -> str:
    """`MAIL_FROM`'s address (`Team Members <no-reply@x>` -> `no-reply@x`), for MAIL FROM."""
    return parseaddr(mail_from)[1] or mail_from


def compose(invitation: Invitation, *, mail_from: str, public_url: str, server_secret: str, now: datetime) -> OutgoingEmail:
    """Raises UnmailableAddress when the stored recipient cannot be mailed as it is."""
    recipient = mailable_address(invitation.recipient)
    token = invitation_token(server_secret, invitation.invitation_id, invitation.expires_at)
    values = {
        "inviter": display_text(invitation.inviter),
        "org_name": display_text(invitation.org_name),
        "link": accept_link(public_url, invitation.invitation_id, token),
        "expires": invitation.expires_at.astimezone(UTC).strftime("%A %d %B %Y, %H:%M UTC"),
        "resent": invitation.resent,
    }
    message = EmailMessage(MAIL_POLICY)
    message.set_raw(*_from_header(mail_from))  # the operator's setting, not user input: parsed once
    # The rest are ASCII we made or checked (a plain addr-spec with no `=?`, a date, names of
    # [A-Za-z0-9._-]), stored as they are: the generator writes them verbatim, and refolds (parses)
    # only a line longer than 78 columns, as it would have anyway.
    message.set_raw("To", recipient)
    set_text_header(message, "Subject", subject(invitation))
    message.set_raw("Date", format_datetime(now))
    message.set_raw("Message-ID", message_id(invitation.event_id))
    message.set_raw("X-Team-Members-Invitation", _NOT_IN_AN_ID.sub("_", invitation.invitation_id))
    message.set_content(_templates.get_template("invitation.txt").render(values))
    message.add_alternative(_templates.get_template("invitation.html").render(values), subtype="html")
    return OutgoingEmail(message, envelope_sender(mail_from), recipient)


@functools.lru_cache(maxsize=8)
def _from_header(mail_from: str) -> tuple[str, str]:
    """`From` as `message["From"] = mail_from` would store it (the header is an immutable str)."""
    return MAIL_POLICY.header_store_parse("From", mail_from)
