"""What the OpenAPI document says a route can answer besides success: problem+json per status."""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from ..problems import PROBLEM_MEDIA_TYPE, Problem

WHY: dict[int, str] = {
    401: "no credentials, or an API key that is unknown, revoked or expired",
    402: "plan_required, seat_purchase_required or charge_mismatch (the seat quote in `details`)",
    403: "permission_denied or invalid_token",
    404: "not_found",
    409: "conflict (command_id_reused included) or last_owner",
    410: "expired",
    413: "the request body is larger than the edge takes",
    422: "validation_error: a parameter, header or body field is not valid",
    503: "a service did not answer; try again after Retry-After seconds",
}

# Every route can answer these: who is calling is checked first, and any field can be invalid.
EVERY_ROUTE = (401, 403, 404, 422, 503)
COMMAND = (*EVERY_ROUTE, 409, 413)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=Problem, generate_examples=False, description=WHY[status], media_type=PROBLEM_MEDIA_TYPE
        )
        for status in sorted(set(statuses))
    }


READ = problems(*EVERY_ROUTE)
