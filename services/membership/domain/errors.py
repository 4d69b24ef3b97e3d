"""Why a command was refused; each carries the contract's error code."""

from __future__ import annotations

from shared.errors import Refused


class DomainError(Refused):
    pass


class ValidationFailed(DomainError):
    code = "validation_error"


class NotFound(DomainError):
    code = "not_found"


class PermissionDenied(DomainError):
    code = "permission_denied"


class PlanRequired(DomainError):
    code = "plan_required"


class SeatPurchaseRequired(DomainError):
    code = "seat_purchase_required"


class ChargeMismatch(DomainError):
    code = "charge_mismatch"


class LastOwner(DomainError):
    code = "last_owner"


class Conflict(DomainError):
    code = "conflict"


class InvalidToken(DomainError):
    code = "invalid_token"


class Expired(DomainError):
    code = "expired"
