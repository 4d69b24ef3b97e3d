"""An email's bytes, written here rather than by Python's `email` package (composing and flattening
an `EmailMessage` was half of the notifier's CPU): headers whose values the caller made safe, then a
multipart/alternative of a text/plain and a text/html part.

What goes to SMTP is 7-bit ASCII with CRLF line ends, every line within 78 octets but the `To`
header's (a 254-character address at most, far below SMTP's 998): each part is UTF-8 in
quoted-printable, and the boundary is random and checked against both encoded parts. Dot-stuffing is
left to the SMTP client (`smtp_session.py` doubles a leading `.` of every line of the bytes it sends).
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Sequence

CRLF = b"\r\n"


def multipart_alternative(headers: Sequence[tuple[str, str]], *, text: str, html: str) -> bytes:
    """The message: `headers` in their order, `MIME-Version`, and the two parts.

    Each header value must be ASCII already folded with CRLF and white space (an encoded word, a
    checked address, our ids): one with any other line break, or non-ASCII, is refused here, so no
    value can start a header line of its own."""
    plain = _text_part("plain", text)
    rich = _text_part("html", html)
    boundary = _boundary_outside(plain, rich)
    head = "".join(_header_line(name, value) for name, value in headers).encode("ascii")
    return b"".join(
        (
            head,
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="%s"\r\n\r\n' % boundary,
            b"--%s\r\n" % boundary,
            plain,
            b"\r\n--%s\r\n" % boundary,
            rich,
            b"\r\n--%s--\r\n" % boundary,
        )
    )


def _header_line(name: str, value: str) -> str:
    if not is_folded_ascii(value):
        raise ValueError(f"the {name} header's value is not ASCII folded with CRLF and white space")
    return f"{name}: {value}\r\n"


def is_folded_ascii(value: str) -> bool:
    """ASCII whose every CR and LF is a fold (CRLF, then a space or a tab): one header, one value."""
    unfolded = value.replace("\r\n ", "").replace("\r\n\t", "")
    return value.isascii() and "\r" not in unfolded and "\n" not in unfolded


def _text_part(subtype: str, text: str) -> bytes:
    """The part's headers and its text in quoted-printable UTF-8, ending with CRLF.

    Lines are split as the email package's `set_content` splits them (LF, CRLF or a lone CR ends a
    line) and joined with CRLF, so quoted-printable (lines of 76 octets at most) keeps each as a hard
    line break and nothing else of the text is a raw CR or LF."""
    lines = text.encode().splitlines()
    body = binascii.b2a_qp(CRLF.join(lines) + CRLF, istext=True)
    return b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s' % (
        subtype.encode("ascii"),
        body,
    )


def _boundary_outside(*parts: bytes) -> bytes:
    """A boundary found in neither part. `=_` never appears in quoted-printable (an `=` is `=3D` or
    starts `=XX` or a soft line break), so the check cannot fail in practice: it keeps it so."""
    while True:
        boundary = new_boundary()
        if not any(boundary in part for part in parts):
            return boundary


def new_boundary() -> bytes:
    return b"=_" + os.urandom(16).hex().encode("ascii")
