"""The invitation email: subject, text and HTML parts from templates, the accept link with its token.

Org names, inviter names and emails are user input: the HTML template autoescapes them, and they
reach headers only as encoded words we write ourselves (`headers.py`). The message's bytes are
written by `mime.py`, not by the `email` package. The envelope's one recipient is the stored address,
never one read back from a header. The token is computed here, at send time, from the server secret;
it lives only in the bytes handed to SMTP, never in the database or a log line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.utils import format_datetime, parseaddr
from pathlib import Path

import jinja2

from shared.invitations import accept_link, invitation_token

from . import mime
from .headers import display_text, encoded_words, mailable_address

MESSAGE_ID_DOMAIN = "team-members.notifier"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,  # they ship with the code: no stat of the file for every email
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

    content: bytes = field(repr=False)  # what DATA carries, before dot-stuffing; it holds the token
    envelope_from: str
    envelope_to: str


def message_id(event_id: str) -> str:
    """The same for every attempt of one delivery, so a duplicate send is recognisable as one."""
    return f"<{_NOT_IN_AN_ID.sub('_', event_id)}@{MESSAGE_ID_DOMAIN}>"


def subject(invitation: Invitation) -> str:
    return f"{display_text(invitation.inviter)} invited you to join {display_text(invitation.org_name)} on Team Members"


@functools.lru_cache(maxsize=8)
def envelope_sender(mail_from: str) -> str:
    """`MAIL_FROM`'s address (`Team Members <no-reply@x>` -> `no-reply@x`), for MAIL FROM."""
    return parseaddr(mail_from)[1] or mail_from


def template_values(invitation: Invitation, public_url: str, server_secret: str) -> dict[str, object]:
    """What the templates show: the names made one line, the accept link with its token, the expiry."""
    token = invitation_token(server_secret, invitation.invitation_id, invitation.expires_at)
    return {
        "inviter": display_text(invitation.inviter),
        "org_name": display_text(invitation.org_name),
        "link": accept_link(public_url, invitation.invitation_id, token),
        "expires": invitation.expires_at.astimezone(UTC).strftime("%A %d %B %Y, %H:%M UTC"),
        "resent": invitation.resent,
    }


def compose(invitation: Invitation, *, mail_from: str, public_url: str, server_secret: str, now: datetime) -> OutgoingEmail:
    """Raises UnmailableAddress when the stored recipient cannot be mailed as it is."""
    recipient = mailable_address(invitation.recipient)
    values = template_values(invitation, public_url, server_secret)
    content = mime.multipart_alternative(
        [
            ("From", from_header(mail_from)),  # the operator's setting, not user input: parsed once
            # ASCII we checked or made: a plain addr-spec with no `=?`, encoded words, a date, ids
            # of [A-Za-z0-9._-]
            ("To", recipient),
            ("Subject", encoded_words("Subject", subject(invitation))),
            ("Date", date_header(now)),
            ("Message-ID", message_id(invitation.event_id)),
            ("X-Team-Members-Invitation", _NOT_IN_AN_ID.sub("_", invitation.invitation_id)),
        ],
        text=_templates.get_template("invitation.txt").render(values),
        html=_templates.get_template("invitation.html").render(values),
    )
    return OutgoingEmail(content, envelope_sender(mail_from), recipient)


@functools.lru_cache(maxsize=4)
def date_header(now: datetime) -> str:
    """`Date`: a batch's emails are written at its claim's instant, so once per batch."""
    return format_datetime(now)


@functools.lru_cache(maxsize=8)
def from_header(mail_from: str) -> str:
    """`From`'s value as the email package writes `message["From"] = mail_from`: parsed and folded
    once per setting. Refused (ValueError) unless it is ASCII whose only line breaks are folds: the
    folding of some Python versions let a CR LF in a display name through as a header of its own."""
    folded = policy.default.header_store_parse("From", mail_from)[1].fold(policy=_SMTP_POLICY)
    value = folded.removeprefix("From: ").removesuffix("\r\n")
    if not folded.startswith("From: ") or not mime.is_folded_ascii(value):
        raise ValueError("MAIL_FROM does not make a From header")
    return value


_SMTP_POLICY = policy.default.clone(linesep="\r\n")  # as aiosmtplib flattened the message
