"""Request/reply plumbing: strict decoding, exactly one reply, never a crash."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog

from .contract.replies import Reply, failure, success
from .errors import Invalid, Refused

T = TypeVar("T", bound=msgspec.Struct)

log = structlog.get_logger()
_encoder = msgspec.json.Encoder()
MAX_MESSAGE = 300  # characters of a refusal's message: it may quote the input, never all of it


def decode_strictly(body: bytes, kind: type[T]) -> T:
    """Raises Refused(validation_error) with a message a person can act on, and of bounded size."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as invalid:
        raise Invalid(bounded(str(invalid))) from None
    except msgspec.DecodeError as malformed:
        raise Invalid(bounded(f"body is not valid JSON: {malformed}")) from None
    except UnicodeDecodeError:
        raise Invalid("body is not valid UTF-8") from None
    except RecursionError:  # nested past what msgspec decodes (about a thousand levels)
        raise Invalid("body is nested too deeply") from None


def bounded(message: str) -> str:
    """At most MAX_MESSAGE characters, with no control character: safe to reply and to log."""
    printable = "".join(ch if ch.isprintable() else "\ufffd" for ch in message[: MAX_MESSAGE + 1])
    return printable if len(printable) <= MAX_MESSAGE else printable[: MAX_MESSAGE - 1] + "\u2026"


def encode_reply(reply: Reply) -> bytes:
    return _encoder.encode(reply)


def reply_handler(
    kind: type[T], handle: Callable[[T], Awaitable[Reply | Any]], observe: Callable[[Reply, float], None] | None = None
) -> Callable[[bytes], Awaitable[bytes]]:
    """Wraps `handle` so that every request gets exactly one encoded reply.

    `handle` returns a Reply, or a plain result that becomes a success reply. `observe`, when
    given, gets each reply and the seconds it took (the metrics of `shared/telemetry.py`).
    """

    async def respond(body: bytes) -> bytes:
        started = time.perf_counter()
        try:
            request = decode_strictly(body, kind)
            outcome = await handle(request)
            reply = outcome if isinstance(outcome, Reply) else success(outcome)
        except Refused as refused:
            reply = failure(refused.code, bounded(refused.message), refused.details)
        except Exception:
            log.exception("request failed", request_type=kind.__name__)
            reply = failure("internal", "the service could not complete the request")
        if observe is not None:
            observe(reply, time.perf_counter() - started)
        return encode_reply(reply)

    return respond
