"""`/v1/orgs/{org_id}/seats`: the quote, buying seats and releasing them."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import JSONBody

from shared.contract.queries import SeatQuote

from ..edge import InjectedEdge
from .bodies import SeatPurchase, SeatRelease
from .parameters import OrgId
from .responses import COMMAND, READ, problems
from .results import SeatsAdded, SeatsReleased


@get("/v1/orgs/{org_id:str}/seats", operation_id="seat_quote", responses=READ)
async def seat_quote(request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId) -> SeatQuote:
    """Seats used and left, and what the next seat costs now (members:read: the Add Member dialog shows it)."""
    await edge.reader(request, org_id, "members:read")
    result: SeatQuote = await edge.bus.query("membership", "seat_quote", org_id=org_id)
    return result


@post("/v1/orgs/{org_id:str}/seats", operation_id="add_seats", status_code=200, responses=problems(*COMMAND, 402))
async def add_seats(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, data: JSONBody[SeatPurchase]
) -> SeatsAdded:
    """Buy seats; `accept_charge_cents` is the most the caller agrees to pay: the prorated charge due now is
    taken, and an amount below it is 402 charge_mismatch with a fresh quote."""
    caller = await edge.caller(request)
    result: SeatsAdded = await edge.command(
        request, "add_seats", org_id, caller.actor, quantity=data.quantity, accept_charge_cents=data.accept_charge_cents
    )
    return result


@post("/v1/orgs/{org_id:str}/seats/release", operation_id="remove_seats", status_code=200, responses=problems(*COMMAND, 402))
async def remove_seats(
    request: Request[Any, Any, Any], edge: InjectedEdge, org_id: OrgId, data: JSONBody[SeatRelease]
) -> SeatsReleased:
    caller = await edge.caller(request)
    result: SeatsReleased = await edge.command(request, "remove_seats", org_id, caller.actor, quantity=data.quantity)
    return result


ROUTES = [seat_quote, add_seats, remove_seats]
