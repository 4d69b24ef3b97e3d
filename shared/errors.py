"""A refusal a service answers with an error reply (never a crash)."""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Conflict(Refused):
    code = "conflict"


class NotFound(Refused):
    code = "not_found"


class Invalid(Refused):
    code = "validation_error"
