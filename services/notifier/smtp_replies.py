"""SMTP replies read from a byte stream, however the reads cut it (RFC 5321 4.2).

A reply is one or more lines `ddd-text` ending with a line `ddd text` (or a bare `ddd`). Replies
are read as aiosmtplib reads them, so an error means the same: the last line's code, and the text
of its lines (code and separator cut, blanks stripped) joined by newlines; a line whose code is
not three digits, or a reply longer than aiosmtplib takes, is `SMTPResponseException(-1, ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiosmtplib import SMTPResponseException
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH

INVALID_RESPONSE = -1  # aiosmtplib's SMTPStatus.invalid_response


@dataclass(frozen=True)
class Reply:
    code: int
    message: str


class ReplyReader:
    """Bytes in, complete replies out; the bytes of an unfinished reply wait for the next read."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished reply wait for the next read."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[Reply]:
        """The replies `data` completes, in order; raises SMTPResponseException on a malformed one
        (the stream cannot be trusted after it: the connection is to be closed)."""
        self._buffer += data
        replies: list[Reply] = []
        start = 0  # of the reply being read
        offset = 0  # of its next line
        message = bytearray()
        try:
            while (end := self._buffer.find(b"\n", offset)) != -1:
                line = bytes(self._buffer[offset : end + 1])
                if len(line) > MAX_LINE_LENGTH or end + 1 - start > MAX_RESPONSE_LENGTH:
                    raise SMTPResponseException(INVALID_RESPONSE, "Response too long")
                code = line[:3]
                if not (code.isdigit() and len(code) == 3):
                    text = line.decode("utf-8", errors="ignore")
                    raise SMTPResponseException(INVALID_RESPONSE, f"Malformed SMTP response line: {text}")
                offset = end + 1
                if message:  # as aiosmtplib joins them: blank leading lines leave no trace
                    message += b"\n"
                message += line[4:].strip(b" \t\r\n")
                if line[3:4] != b"-":
                    replies.append(Reply(int(code), message.decode("utf-8", "surrogateescape")))
                    start, message = offset, bytearray()
            if len(self._buffer) - start > MAX_RESPONSE_LENGTH:
                raise SMTPResponseException(INVALID_RESPONSE, "Response too long")
        finally:
            del self._buffer[:start]
        return replies
