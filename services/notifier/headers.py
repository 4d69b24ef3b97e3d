"""Header values built so that no user text can start a header line, and the one address we mail.

Python's email package parses every header value it is handed as a string, and that parser decodes
RFC 2047 encoded words: an organization named `=?utf-8?q?Acme=0D=0AReply-To:...?=` turned into a
real CR LF, and Python 3.11 folded it into the message as a `Reply-To` header and a body of the
attacker's choosing. So user text never reaches that parser:

1. `display_text` makes it one line: every control character (C0, DEL, C1, among them NEL U+0085),
   line and paragraph separator (U+2028, U+2029) and bidi embedding/override/isolate becomes a
   space. Text membership accepts comes out unchanged.
2. `encoded_words` encodes the whole value ourselves, as RFC 2047 encoded words in UTF-8: the raw
   header is nothing but `=?utf-8?b?...?=` (or `?q?`) tokens, folded below 78 columns. Inside an
   encoded word a `=?` or a CR LF of the user's is plain payload, and a reader decodes once.
3. The value is stored with `Message.set_raw`, which keeps it as given; the generator writes such a
   value verbatim (it would refold, through the parser, only a line longer than 78 columns).

Addresses cannot be encoded words. The recipient reaches the `To` header and the SMTP envelope only
if `mailable_address` accepts it: plain ASCII, a strict addr-spec, nothing a parser could decode.
"""

from __future__ import annotations

import re
import unicodedata
from email.header import Header
from email.message import EmailMessage

from aiosmtplib.email import parse_address

MAX_DISPLAY_CHARS = 256  # membership's names are at most 200; older history is clipped
MAX_HEADER_TEXT_CHARS = 1000  # a whole subject: two display texts and our words
MAX_ADDRESS_CHARS = 254
MAX_LINE = 78  # the generator refolds (re-parses) a longer line

_NOT_DISPLAYABLE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ENCODED_WORD_START = "=?"
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")  # RFC 5322 3.2.3
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class UnmailableAddress(ValueError):
    """The stored recipient cannot be put on the envelope and in `To` as it is."""


def display_text(value: str, limit: int = MAX_DISPLAY_CHARS) -> str:
    """One line of text to show a person: what could break a line or reorder it becomes a space."""
    text = "".join(" " if _breaks_the_line(char) else char for char in value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _breaks_the_line(char: str) -> bool:
    return char in _BIDI_CONTROLS or unicodedata.category(char) in _NOT_DISPLAYABLE_CATEGORIES


def encoded_words(name: str, text: str) -> str:
    """`text` as RFC 2047 encoded words only, folded with LF (the generator writes its own line ends)."""
    value = Header(display_text(text, MAX_HEADER_TEXT_CHARS), "utf-8", header_name=name, maxlinelen=MAX_LINE - 2).encode(
        linesep="\n"
    )
    lines = value.split("\n")
    if not value.isascii() or len(name) + 2 + len(lines[0]) > MAX_LINE or any(len(line) > MAX_LINE for line in lines):
        raise ValueError(f"the {name} header did not encode into short ASCII lines")  # never seen; refuse rather than refold
    return value


def set_text_header(message: EmailMessage, name: str, text: str) -> None:
    """A header whose value is user text: encoded by us, stored as is, never parsed on the way out."""
    message.set_raw(name, encoded_words(name, text))


def mailable_address(address: str) -> str:
    """The stored address, if it is safe as the one envelope recipient and as the `To` header.

    Membership validates addresses (email-validator, no SMTPUTF8, domains in punycode), but the
    stream keeps what older versions accepted: `x,second@acme.io`, `<x>@acme.io`, non-ASCII. Those
    are refused here, with a reason, and the delivery fails instead of reaching someone else. Only
    the syntax is checked (which domains may be invited is membership's rule).
    """
    if len(address) > MAX_ADDRESS_CHARS:
        raise UnmailableAddress(f"the address is longer than {MAX_ADDRESS_CHARS} characters")
    if not address.isascii():
        raise UnmailableAddress("the address has non-ASCII characters, and this notifier does not send SMTPUTF8")
    if _ENCODED_WORD_START in address:
        raise UnmailableAddress("the address contains '=?', which mail readers may decode as an encoded word")
    local_part, _, domain = address.rpartition("@")
    if not _DOT_ATOM.fullmatch(local_part) or len(local_part) > 64:
        raise UnmailableAddress("the part before the @ is not a plain dot-atom (no quotes, spaces, brackets or commas)")
    if not _HOST_NAME.fullmatch(domain):
        raise UnmailableAddress("the part after the @ is not a host name (letters, digits, hyphens; IDN as punycode)")
    try:
        reparsed = parse_address(address)  # what the SMTP client will put in RCPT TO
    except ValueError:
        reparsed = None
    if reparsed != address:
        raise UnmailableAddress("the address does not read back as itself")
    return address
