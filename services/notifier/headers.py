"""Header values built so that no user text can start a header line, and the one address we mail.

Python's email package parses every header value it is handed as a string, and that parser decodes
RFC 2047 encoded words: an organization named `=?utf-8?q?Acme=0D=0AReply-To:...?=` turned into a
real CR LF, and Python 3.11 folded it into the message as a `Reply-To` header and a body of the
attacker's choosing. So user text never reaches a parser on its way out (we write the bytes
ourselves, `mime.py`):

1. `display_text` makes it one line: every control character (C0, DEL, C1, among them NEL U+0085),
   line and paragraph separator (U+2028, U+2029) and bidi embedding/override/isolate becomes a
   space, and so does a lone surrogate. Text membership accepts comes out unchanged.
2. `encoded_words` encodes the whole value ourselves, as RFC 2047 encoded words in UTF-8 and
   base64: the raw header is nothing but `=?utf-8?b?...?=` tokens, each of whole characters, folded
   below 78 columns. Inside an encoded word a `=?` or a CR LF of the user's is plain payload, and a
   reader decodes once.

Addresses cannot be encoded words. The recipient reaches the `To` header and the SMTP envelope only
if `mailable_address` accepts it: plain ASCII, a strict addr-spec, nothing a parser could decode.
"""

from __future__ import annotations

import re
import unicodedata
from base64 import b64encode

from aiosmtplib.email import parse_address

MAX_DISPLAY_CHARS = 256  # membership's names are at most 200; older history is clipped
MAX_HEADER_TEXT_CHARS = 1000  # a whole subject: two display texts and our words
MAX_ADDRESS_CHARS = 254
MAX_LINE = 78  # RFC 5322's SHOULD; mail readers and relays refold (re-parse) a longer line
MAX_ENCODED_WORD = 75  # RFC 2047, 2
FOLD = "\r\n "  # a header's continuation: CRLF, then white space

_NOT_DISPLAYABLE_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# The same characters as one class, for speed: Cc is C0, DEL and C1; Cs the surrogates; Zl and Zp
# are U+2028 and U+2029 alone (a unit test compares it with the categories over every code point).
_BREAKS_THE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ENCODED_WORD_START = "=?"
_WORD_START, _WORD_END = "=?utf-8?b?", "?="
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")  # RFC 5322 3.2.3
# A local part of these characters only reads back as itself through the SMTP client's parser
# (`email.utils.parseaddr` treats none of them specially): it is not parsed again per email. Held to the
# parser by `tests/unit/test_notifier_headers.py`; any other dot-atom still goes through it.
_PLAIN_LOCAL_PART = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class UnmailableAddress(ValueError):
    """The stored recipient cannot be put on the envelope and in `To` as it is."""


def display_text(value: str, limit: int = MAX_DISPLAY_CHARS) -> str:
    """One line of text to show a person: what could break a line or reorder it becomes a space."""
    text = _BREAKS_THE_LINE.sub(" ", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def breaks_the_line(char: str) -> bool:
    """The rule `_BREAKS_THE_LINE` is written from."""
    return char in _BIDI_CONTROLS or unicodedata.category(char) in _NOT_DISPLAYABLE_CATEGORIES


def encoded_words(name: str, text: str) -> str:
    """`text` as RFC 2047 encoded words only (UTF-8, base64), folded with CRLF and a space: the
    `name: ` line and each continuation stay within 78 columns, each word within 75 characters.

    A word never ends inside a UTF-8 sequence, so each one decodes on its own; a reader joins
    adjacent words without the folding white space between them (RFC 2047, 6.2)."""
    data = display_text(text, MAX_HEADER_TEXT_CHARS).encode()  # no surrogate is left to refuse
    room = min(MAX_ENCODED_WORD, MAX_LINE - len(name) - len(": "))
    if room < len(_WORD_START + _WORD_END) + 8:  # 8 base64 characters: 6 bytes, a whole 4-byte character
        raise ValueError(f"no encoded word fits after {name!r} in a line")  # never with our names
    words = []
    start = 0
    while start < len(data):
        end = start + (room - len(_WORD_START + _WORD_END)) // 4 * 3
        while end < len(data) and 0x80 <= data[end] < 0xC0:  # a UTF-8 continuation byte: cut before its character
            end -= 1
        words.append(_WORD_START + b64encode(data[start:end]).decode("ascii") + _WORD_END)
        start, room = end, MAX_ENCODED_WORD
    return FOLD.join(words)


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
    if _PLAIN_LOCAL_PART.fullmatch(local_part):
        return address
    try:
        reparsed = parse_address(address)  # what the SMTP client will put in RCPT TO
    except ValueError:
        reparsed = None
    if reparsed != address:
        raise UnmailableAddress("the address does not read back as itself")
    return address
