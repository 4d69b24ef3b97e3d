"""The oracle: the invitation email as the notifier wrote it with Python's `email` package before
`services/notifier/mime.py` (an `EmailMessage` through `set_content`/`add_alternative`, the subject as
`email.header.Header`'s encoded words, flattened by aiosmtplib). The new bytes must read back as these."""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime

from aiosmtplib.email import flatten_message

from services.notifier.headers import MAX_HEADER_TEXT_CHARS, display_text, mailable_address
from services.notifier.mail import _NOT_IN_AN_ID, Invitation, _templates, message_id, subject, template_values


def _encoded_words(name: str, text: str) -> str:
    return Header(display_text(text, MAX_HEADER_TEXT_CHARS), "utf-8", header_name=name, maxlinelen=76).encode(linesep="\n")


def compose_with_the_email_package(
    invitation: Invitation, *, mail_from: str, public_url: str, server_secret: str, now: datetime
) -> bytes:
    recipient = mailable_address(invitation.recipient)
    values = template_values(invitation, public_url, server_secret)  # the same values: the writing is under test
    message = EmailMessage(policy.default)
    message.set_raw(*policy.default.header_store_parse("From", mail_from))
    message.set_raw("To", recipient)
    message.set_raw("Subject", _encoded_words("Subject", subject(invitation)))
    message.set_raw("Date", format_datetime(now))
    message.set_raw("Message-ID", message_id(invitation.event_id))
    message.set_raw("X-Team-Members-Invitation", _NOT_IN_AN_ID.sub("_", invitation.invitation_id))
    message.set_content(_templates.get_template("invitation.txt").render(values))
    message.add_alternative(_templates.get_template("invitation.html").render(values), subtype="html")
    return flatten_message(message)
