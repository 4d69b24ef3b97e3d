"""`/session`: sign in with the platform's token or a local link, and sign out.

Browser flows, not API: they answer with redirects, and refusals as problem+json, or as a small
page when the browser asks for HTML. Left out of the OpenAPI document.
"""

from __future__ import annotations

import html
from typing import Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.response import Redirect

from .callers import require_csrf_token
from .edge import Edge
from .identity import Identity, SignInRefused, safe_next_path
from .problems import PROBLEM_MEDIA_TYPE, problem
from .signin import SignIn

_encoder = msgspec.json.Encoder()
MAX_PARAMETER_LENGTH = 4096


@get("/session", include_in_schema=False)
async def platform_sign_in(request: Request[Any, Any, Any], edge: Edge) -> Response[Any]:
    """`?token=<the platform's JWT>[&next=/a/path]`: a session, then a redirect to `next` or `/`."""
    signin = _door(edge)
    try:
        identity = await signin.by_platform_token(_parameter(request, "token"))
    except SignInRefused as refused:
        return not_signed_in(request, str(refused))
    return _signed_in(signin, identity, request.query_params.get("next"))


@get("/session/local", include_in_schema=False)
async def local_sign_in(request: Request[Any, Any, Any], edge: Edge) -> Response[Any]:
    """`?token=…` from `teamctl login`: one use, five minutes."""
    signin = _door(edge)
    try:
        identity, next_path = await signin.by_local_link(_parameter(request, "token"))
    except SignInRefused as refused:
        return not_signed_in(request, str(refused))
    return _signed_in(signin, identity, next_path)


@post("/session/sign-out", include_in_schema=False, status_code=200)
async def sign_out(request: Request[Any, Any, Any], edge: Edge) -> Response[Any]:
    """Ends the session on every edge (CSRF token required); without one, only forgets the cookie."""
    signin = _door(edge)
    user = await signin.sessions.signed_in(request)
    if user is not None:
        await require_csrf_token(request, user)
        await signin.sessions.end(user)
    ended = signin.sessions.ended()
    if _wants_html(request):
        return Redirect("/", status_code=303, cookies=[ended])
    return Response(content=b"", status_code=204, cookies=[ended])


@get("/session/csrf-token", include_in_schema=False)
async def csrf_token(request: Request[Any, Any, Any], edge: Edge) -> Response[Any]:
    """The session's CSRF token for scripts of this site (no other origin can read it: no CORS here)."""
    user = await _door(edge).sessions.signed_in(request)
    if user is None:
        return not_signed_in(request, "sign in first")
    body = _encoder.encode({"csrf_token": user.csrf_token})
    return Response(content=body, media_type=MediaType.JSON, headers={"Cache-Control": "no-store"})


def _door(edge: Edge) -> SignIn:
    """An edge assembled without sign-in (as some tests of the API are) has no /session."""
    if edge.signin is None:
        raise NotFoundException()
    return edge.signin


def _parameter(request: Request[Any, Any, Any], name: str) -> str:
    value = request.query_params.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_PARAMETER_LENGTH:
        raise SignInRefused("the sign-in link is incomplete; ask for a new one")
    return value


# The sign-in URL holds a token: no cache keeps the answer, and no Referer carries the URL on.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _signed_in(signin: SignIn, identity: Identity, next_path: Any) -> Response[Any]:
    cookie = signin.sessions.begin(identity)
    return Redirect(safe_next_path(next_path) or "/", status_code=303, cookies=[cookie], headers=_PRIVATE)


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


def not_signed_in(request: Request[Any, Any, Any], detail: str) -> Response[Any]:
    """401: problem+json, or a small page for a browser."""
    if _wants_html(request):
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8><title>Not signed in</title>"
            f"<main><h1>Not signed in</h1><p>{html.escape(detail)}</p></main></html>"
        )
        return Response(content=page, status_code=401, media_type=MediaType.HTML, headers=_PRIVATE)
    body = problem("unauthenticated", detail)
    return Response(content=_encoder.encode(body), status_code=401, media_type=PROBLEM_MEDIA_TYPE, headers=_PRIVATE)


ROUTES = [platform_sign_in, local_sign_in, sign_out, csrf_token]
