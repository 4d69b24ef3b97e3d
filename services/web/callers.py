"""Who is calling: an API key (`Authorization: Bearer <secret>`) or a signed-in user (the session
cookie). The edge never trusts an actor named by the client; it names the actor itself.

Queries on the bus carry no actor, so before every read the edge asks `authorize` whether the caller
holds the permission the read needs. Commands carry the actor, and membership checks them itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Protocol

from litestar import Request

from shared.contract.common import Actor
from shared.errors import PermissionDenied, Refused

from .bus import PlatformBus

BEARER = "bearer "
# A session caller's unsafe request carries the session's CSRF token: in this header (scripts) or this
# form field (HTML forms). API keys need none: no browser sends them on its own.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Any permission serves to learn who a key is: `authorize` names the principal either way.
IDENTIFYING_PERMISSION = "org:read"


class Unauthenticated(Refused):
    """No credentials, or a key that is unknown, revoked, expired or inactive: 401."""

    code = "unauthenticated"  # type: ignore[assignment]  # the edge's own code, never on the bus


@dataclass(frozen=True)
class SignedInUser:
    user_id: str
    email: str
    session_id: str = ""
    # Pages put it in forms (`csrf_token`) or a meta tag for scripts (`X-CSRF-Token`); empty never passes.
    csrf_token: str = ""


class SessionReader(Protocol):
    async def signed_in(self, request: Request) -> SignedInUser | None: ...


class NoSessions:
    async def signed_in(self, request: Request) -> SignedInUser | None:
        return None


@dataclass(frozen=True)
class Access:
    """What `authorize` said about a caller in one organization."""

    org_id: str
    role: str | None
    permissions: tuple[str, ...]
    projects: tuple[str, ...] | None = None  # the caller's project scope; None: every project

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


@dataclass(frozen=True)
class Caller:
    actor: Actor
    api_key: str | None = None  # the presented secret; never logged, never echoed
    user: SignedInUser | None = None
    key_access: Access | None = None  # a key's one organization and its permissions there, learnt when identified

    async def access(self, bus: PlatformBus, org_id: str, permission: str) -> Access:
        if self.key_access is not None:
            if self.key_access.org_id != org_id:
                raise PermissionDenied("the API key belongs to another organization", reason="other_organization")
            return self.key_access
        answer = await bus.query("membership", "authorize", org_id=org_id, user_id=self.actor.id, permission=permission)
        if answer["principal"] is None:
            raise PermissionDenied("you are not a member of this organization", reason="not_a_member")
        return Access(org_id=org_id, role=answer["role"], permissions=tuple(answer["permissions"]), projects=scope_of(answer))

    async def require(self, bus: PlatformBus, org_id: str, permission: str) -> Access:
        """The caller's access in `org_id`, when it holds `permission`; otherwise permission_denied."""
        access = await self.access(bus, org_id, permission)
        if not access.allows(permission):
            raise PermissionDenied(f"this needs the permission {permission}", permission=permission)
        return access


def scope_of(answer: dict[str, Any]) -> tuple[str, ...] | None:
    projects = answer.get("projects")
    return None if projects is None else tuple(projects)


async def identify(request: Request, bus: PlatformBus, sessions: SessionReader) -> Caller:
    """The caller behind a request; raises Unauthenticated (401) when there is none."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if not authorization.lower().startswith(BEARER) or not authorization[len(BEARER) :].strip():
            raise Unauthenticated("the Authorization header must be `Bearer <API key>`")
        secret = authorization[len(BEARER) :].strip()
        if len(secret) > 512:
            raise Unauthenticated("the API key is unknown, revoked or expired")
        answer = await bus.query("membership", "authorize", api_key=secret, permission=IDENTIFYING_PERMISSION)
        if answer["principal"] is None:
            raise Unauthenticated("the API key is unknown, revoked or expired")
        access = Access(
            org_id=answer["org_id"], role=answer["role"], permissions=tuple(answer["permissions"]), projects=scope_of(answer)
        )
        return Caller(actor=Actor(type="api_key", id=answer["principal"]["id"]), api_key=secret, key_access=access)
    user = await sessions.signed_in(request)
    if user is None:
        raise Unauthenticated("sign in, or present an API key as `Authorization: Bearer <secret>`")
    await require_csrf_token(request, user)
    return Caller(actor=Actor(type="user", id=user.user_id), user=user)


async def require_csrf_token(request: Request, user: SignedInUser) -> None:
    """For an unsafe method: the session's CSRF token, from the header or the form; else permission_denied."""
    if request.method.upper() not in UNSAFE_METHODS:
        return
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").lower().startswith(FORM_TYPES):
        field = (await request.form()).get(CSRF_FIELD)
        presented = field if isinstance(field, str) else None
    if not presented:
        raise PermissionDenied(
            f"a signed-in change needs the session's CSRF token in {CSRF_HEADER} or the form field {CSRF_FIELD}",
            reason="csrf_token_missing",
        )
    if not user.csrf_token or not hmac.compare_digest(presented.encode(), user.csrf_token.encode()):
        raise PermissionDenied("the CSRF token does not belong to this session; reload the page", reason="csrf_token_mismatch")
