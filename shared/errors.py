"""A refusal a service answers with an error reply (never a crash): one class per contract error code."""

from __future__ import annotations

from typing import Any

from .contract.replies import ErrorCode


class Refused(Exception):
    code: ErrorCode = "internal"

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


class PermissionDenied(Refused):
    code = "permission_denied"


class PlanRequired(Refused):
    code = "plan_required"


class SeatPurchaseRequired(Refused):
    code = "seat_purchase_required"


class ChargeMismatch(Refused):
    code = "charge_mismatch"


class LastOwner(Refused):
    code = "last_owner"


class InvalidToken(Refused):
    code = "invalid_token"


class Expired(Refused):
    code = "expired"
