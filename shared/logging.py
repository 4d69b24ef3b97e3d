"""structlog, configured once: JSON when not on a terminal, context bound per message."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import Any

import structlog

# What one request is about (a command's id, org, correlation), in one context variable: set and reset
# once per request, where structlog's `bind_contextvars` sets a variable per key.
_request_context: ContextVar[dict[str, Any] | None] = ContextVar("request_context", default=None)


def configure_logging(service: str, level: str = "info") -> structlog.stdlib.BoundLogger:
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger()


def bind_request_context(**fields: Any) -> Token[dict[str, Any] | None]:
    """`fields` in every line logged until `reset_request_context(token)`, as `bind_contextvars` would put them."""
    return _request_context.set(fields)


def reset_request_context(token: Token[dict[str, Any] | None]) -> None:
    _request_context.reset(token)


def merge_request_context(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    fields = _request_context.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict
