"""The API's input read as strictly as the bus reads a command, before Litestar reads it.

Litestar converts loosely (`"quantity": "1"` is 1, `?limit=1e3` is 1000) and lets a body's invalid
UTF-8 or a deep nesting escape as a 500. Here every body is decoded once with msgspec in strict
mode into the route's body Struct, integer query parameters must be written as integers, unknown
and repeated query parameters are refused: each is one `validation_error`, before anything is sent on."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg, ParameterKwarg

from shared.contract.common import ID_PATTERN, ROLE_KEY_PATTERN, SAFE_TEXT
from shared.errors import Invalid

RESERVED_NAMES = frozenset({"request", "edge", "data"})
INTEGER = re.compile(r"-?[0-9]{1,32}")
# msgspec names a failed pattern by its regex; a person reads the grammar in words.
PATTERNS_IN_WORDS = {
    ROLE_KEY_PATTERN: "a role key (lower-case letters, digits and dashes, starting with a letter or digit, at most 63)",
    ID_PATTERN: "an id (letters, digits, underscores and dashes, 1 to 64 of them)",
    SAFE_TEXT: "text without control characters",
}


def in_words(message: str) -> str:
    for pattern, words in PATTERNS_IN_WORDS.items():
        message = message.replace(f"`str` matching regex {pattern!r}", words)
    return message


@dataclass(frozen=True)
class DeclaredInput:
    """What a route takes besides its path: query parameters by their names on the wire, and its body type."""

    query: frozenset[str]
    integer_query: frozenset[str]
    body: type[Any] | None


@functools.cache
def declared_input(handler: HTTPRouteHandler) -> DeclaredInput:
    query: set[str] = set()
    integers: set[str] = set()
    body: type[Any] | None = None
    for name, field in handler.parsed_fn_signature.parameters.items():
        declared = field.kwarg_definition
        if name == "data" and isinstance(declared, BodyKwarg):
            body = field.annotation
            continue
        if name in RESERVED_NAMES or not isinstance(declared, ParameterKwarg) or declared.header or declared.cookie:
            continue
        wire_name = declared.query or name
        query.add(wire_name)
        if field.annotation is int:
            integers.add(wire_name)
    return DeclaredInput(frozenset(query), frozenset(integers), body)


async def strictly_read(request: Request[Any, Any, Any]) -> None:
    """Refuse loose input on an API route: unknown or non-integer query parameters, a body not its Struct."""
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    declared = declared_input(handler)
    unknown = set(request.query_params) - declared.query - set(request.path_params)
    if unknown:
        raise Invalid("unknown query parameters", unknown=sorted(name[:64] for name in unknown)[:10])
    # Every query parameter is one value: a second one is refused rather than silently chosen between.
    repeated = sorted(name for name in declared.query if len(request.query_params.getall(name, [])) > 1)
    if repeated:
        raise Invalid("a query parameter is given more than once", repeated=repeated)
    for name in declared.integer_query:
        if not all(INTEGER.fullmatch(value) for value in request.query_params.getall(name, [])):
            raise Invalid(f"`{name}` must be an integer written in digits", field=name)
    if declared.body is not None:
        strict_body(await request.body(), declared.body)


def strict_body(raw: bytes, body_type: type[Any]) -> Any:
    """The body as `body_type`, decoded as the bus decodes a command: no coercion, no unknown field."""
    try:
        return msgspec.json.decode(raw, type=body_type, strict=True)
    except msgspec.ValidationError as invalid:
        raise Invalid(in_words(str(invalid))[:500]) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise Invalid("the body is not JSON in UTF-8") from None
    except RecursionError:
        raise Invalid("the body is nested too deeply") from None
