"""The one reply every request gets: `{"ok": true, ...}` or `{"ok": false, "error": ...}`."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

ErrorCode = Literal[
    "validation_error",
    "not_found",
    "permission_denied",
    "plan_required",
    "seat_purchase_required",
    "charge_mismatch",
    "last_owner",
    "conflict",
    "invalid_token",
    "expired",
    "internal",
]


class Error(msgspec.Struct, frozen=True):
    code: ErrorCode
    message: str
    details: dict[str, Any] = {}


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """`result` and `events` when ok, `error` when not."""

    ok: bool
    result: Any = None
    events: list[str] | None = None
    error: Error | None = None


def success(result: Any, events: list[str] | None = None) -> Reply:
    return Reply(ok=True, result=result, events=events if events is not None else [])


def failure(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> Reply:
    return Reply(ok=False, error=Error(code=code, message=message, details=details or {}))
