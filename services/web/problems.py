"""Errors as `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`, and the
contract's `code` and `details`. Never a stack trace."""

from __future__ import annotations

from typing import Any

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://team-members.dev/problems/"

STATUS_OF_CODE: dict[str, int] = {
    "unauthenticated": 401,
    "permission_denied": 403,
    "invalid_token": 403,
    "not_found": 404,
    "plan_required": 402,
    "seat_purchase_required": 402,
    "charge_mismatch": 402,
    "conflict": 409,
    "last_owner": 409,
    "expired": 410,
    "payload_too_large": 413,
    "validation_error": 422,
    "unavailable": 503,
    "internal": 503,
}

TITLE_OF_CODE: dict[str, str] = {
    "unauthenticated": "Sign in, or present a live API key",
    "permission_denied": "Not allowed",
    "invalid_token": "The link's token is not valid",
    "not_found": "Not found",
    "plan_required": "Your plan does not include this",
    "seat_purchase_required": "A seat must be bought first",
    "charge_mismatch": "The price has changed; confirm the new amount",
    "conflict": "Conflicts with the current state",
    "last_owner": "An organization keeps at least one owner",
    "expired": "Expired",
    "payload_too_large": "The request body is too large",
    "validation_error": "The request is not valid",
    "unavailable": "The service is not answering; try again shortly",
    "internal": "The service is not answering; try again shortly",
}


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    details: dict[str, Any] = {}


def problem(code: str, detail: str, details: dict[str, Any] | None = None) -> Problem:
    return Problem(
        type=PROBLEM_TYPE_BASE + code.replace("_", "-"),
        title=TITLE_OF_CODE.get(code, "Error"),
        status=STATUS_OF_CODE.get(code, 503),
        detail=detail,
        code=code,
        details=details or {},
    )
