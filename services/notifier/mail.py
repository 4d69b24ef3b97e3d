"""The invitation email: subject, text and HTML parts from templates, the accept link with its token.

Org names, inviter names and emails are user input: the HTML template autoescapes them, and
header values lose their control characters. The token is computed here, at send time, from the
server secret; it lives only in the message handed to SMTP, never in the database or a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import jinja2

from shared.invitations import accept_link, invitation_token

MESSAGE_ID_DOMAIN = "team-members.notifier"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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


def message_id(event_id: str) -> str:
    """The same for every attempt of one delivery, so a duplicate send is recognisable as one."""
    return f"<{re.sub(r'[^A-Za-z0-9._-]', '_', event_id)}@{MESSAGE_ID_DOMAIN}>"


def subject(invitation: Invitation) -> str:
    return _header_text(f"{invitation.inviter} invited you to join {invitation.org_name} on Team Members")


def compose(invitation: Invitation, *, mail_from: str, public_url: str, server_secret: str, now: datetime) -> EmailMessage:
    token = invitation_token(server_secret, invitation.invitation_id, invitation.expires_at)
    values = {
        "inviter": invitation.inviter,
        "org_name": invitation.org_name,
        "link": accept_link(public_url, invitation.invitation_id, token),
        "expires": invitation.expires_at.astimezone(timezone.utc).strftime("%A %d %B %Y, %H:%M UTC"),
        "resent": invitation.resent,
    }
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = _header_text(invitation.recipient)
    message["Subject"] = subject(invitation)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(invitation.event_id)
    message["X-Team-Members-Invitation"] = _header_text(invitation.invitation_id)
    message.set_content(_templates.get_template("invitation.txt").render(values))
    message.add_alternative(_templates.get_template("invitation.html").render(values), subtype="html")
    return message


def _header_text(value: str) -> str:
    return _CONTROL.sub(" ", value).strip()
