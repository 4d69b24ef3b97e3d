"""What every route handler gets: the bus, the session reader, the settings, and the request's ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from shared.contract.common import Actor
from shared.errors import Invalid

from .bus import PlatformBus, fresh_command_id
from .callers import Access, Caller, SessionReader, identify
from .config import WebSettings
from .signin import SignIn

# X-Request-ID and Idempotency-Key become `correlation_id` and `command_id`: the contract's bounded keys.
HEADER_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")


@dataclass(frozen=True)
class Edge:
    bus: PlatformBus
    sessions: SessionReader
    settings: WebSettings
    public_url: str
    signin: SignIn | None = None  # /session's sign-in and sign-out; `sessions` is its reader

    async def caller(self, request: Request[Any, Any, Any]) -> Caller:
        return await identify(request, self.bus, self.sessions)

    async def reader(self, request: Request[Any, Any, Any], org_id: str, permission: str) -> tuple[Caller, Access]:
        """The caller of a read, once it is known to hold `permission` in `org_id`."""
        caller = await self.caller(request)
        return caller, await caller.require(self.bus, org_id, permission)

    async def command(self, request: Request[Any, Any, Any], name: str, org_id: str, actor: Actor, /, **fields: Any) -> Any:
        """The command's result; `fields` are its own (an API key's `name` among them), None ones left out."""
        return await self.bus.command(
            name,
            org_id,
            actor,
            command_id_of(request, actor, org_id),
            request_id_of(request),
            **{k: v for k, v in fields.items() if v is not None},
        )


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """Set by the request-id middleware: the client's X-Request-ID when well formed, or one of ours."""
    return str(request.state.request_id)


def command_id_of(request: Request[Any, Any, Any], actor: Actor, org_id: str) -> str:
    """A fresh id, or the one id an `Idempotency-Key` names for this caller in this organization.

    Membership deduplicates command ids across every organization, so the client's key is never the
    id itself: it is hashed with the actor and the org, and a retry by the same caller is the same
    command while another caller's or another org's same key never meets it (nor learns it was used)."""
    given = request.headers.get("idempotency-key")
    if given is None:
        return fresh_command_id()
    if not HEADER_ID.fullmatch(given):
        raise Invalid("Idempotency-Key must be 1 to 128 of A-Z a-z 0-9 . _ : ~ -", field="Idempotency-Key")
    scope = "\n".join((actor.type, actor.id, org_id, given))  # none of the four can hold a newline
    return f"web_{hashlib.sha256(scope.encode()).hexdigest()}"


# How a route handler asks for the edge: by name, as Litestar 3 requires.
InjectedEdge = NamedDependency[Edge]
