"""The edge's side of the bus: the same commands and queries any platform service sends, one reply each.

A refusal comes back as the `Refused` of its contract code (shared/errors.py); a service that does not
answer in time, or is not there, as `Unavailable`.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import nats
import nats.errors

from shared import errors, subjects
from shared.contract.common import Actor
from shared.contract.replies import Reply

REFUSALS: dict[str, type[errors.Refused]] = {
    refusal.code: refusal
    for refusal in (
        errors.Invalid,
        errors.NotFound,
        errors.PermissionDenied,
        errors.PlanRequired,
        errors.SeatPurchaseRequired,
        errors.ChargeMismatch,
        errors.LastOwner,
        errors.Conflict,
        errors.InvalidToken,
        errors.Expired,
    )
}


class Unavailable(Exception):
    """The bus, or the service behind a subject, did not answer."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"{subject} did not answer")
        self.subject = subject


class InternalFailure(Exception):
    """A service answered `internal`: the edge says 503 and logs it, never a stack trace to the client."""


_encoder = msgspec.json.Encoder()
_reply_decoder = msgspec.json.Decoder(Reply)


def fresh_command_id() -> str:
    return f"web_{uuid.uuid4().hex}"


class PlatformBus:
    def __init__(self, nc: nats.NATS, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout

    async def request(self, subject: str, body: Any) -> Any:
        """The reply's `result`; raises the refusal, `InternalFailure` or `Unavailable`."""
        try:
            message = await self.nc.request(subject, _encoder.encode(body), timeout=self.timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError):
            raise Unavailable(subject) from None
        reply = _reply_decoder.decode(message.data)
        if reply.ok:
            return reply.result
        assert reply.error is not None
        refusal = REFUSALS.get(reply.error.code)
        if refusal is None:
            raise InternalFailure(f"{subject}: {reply.error.message}")
        raise refusal(reply.error.message, **reply.error.details)

    async def command(
        self, name: str, org_id: str, actor: Actor, command_id: str, correlation_id: str | None, /, **fields: Any
    ) -> Any:
        body = {"command_id": command_id, "org_id": org_id, "actor": actor, **fields}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        return await self.request(subjects.command(name), body)

    async def query(self, service: str, name: str, /, **fields: Any) -> Any:
        return await self.request(subjects.query(service, name), {k: v for k, v in fields.items() if v is not None})
