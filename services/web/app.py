"""The Litestar application: routes, the error mapping to problem+json, request ids, OpenAPI."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp, Receive, Scope, Send

from shared.errors import Refused
from shared.requests import bounded
from shared.version import package_version

from . import openapi
from .api import ROUTES as API_ROUTES
from .bus import InternalFailure, Unavailable
from .callers import Unauthenticated
from .edge import HEADER_ID, Edge
from .pages import ROUTES as PAGE_ROUTES
from .problems import PROBLEM_MEDIA_TYPE, problem
from .signin_routes import ROUTES as SIGNIN_ROUTES
from .strict_input import strictly_read

log = structlog.get_logger()
_encoder = msgspec.json.Encoder()


def problem_response(
    code: str, detail: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body = problem(code, bounded(detail), details)
    return Response(content=_encoder.encode(body), status_code=body.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _refused(_: Request[Any, Any, Any], refusal: Refused) -> Response[bytes]:
    challenge = {"WWW-Authenticate": 'Bearer realm="team-members"'} if isinstance(refusal, Unauthenticated) else None
    return problem_response(refusal.code, refusal.message, refusal.details, headers=challenge)


def _unavailable(request: Request[Any, Any, Any], failure: Exception) -> Response[bytes]:
    edge: Edge = request.app.state.edge
    log.warning("a service did not answer", failure=str(failure), path=request.url.path)
    return problem_response(
        "unavailable",
        "a service behind this edge did not answer; try again shortly",
        headers={"Retry-After": str(edge.settings.retry_after_seconds)},
    )


def _invalid(_: Request[Any, Any, Any], invalid: ValidationException) -> Response[bytes]:
    detail = invalid.detail if isinstance(invalid.detail, str) else "the request is not valid"
    extra = invalid.extra if isinstance(invalid.extra, list) else []
    return problem_response("validation_error", detail, {"errors": extra[:20]} if extra else None)


def _http(_: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    if isinstance(error, NotFoundException):
        return problem_response("not_found", "no such resource")
    if error.status_code == 413:
        return problem_response("payload_too_large", "the request body is too large")
    if error.status_code == 400:  # a body that is not JSON, say: as invalid as a wrong field
        return problem_response("validation_error", str(error.detail))
    body = problem("http_error", bounded(str(error.detail)))
    body = msgspec.structs.replace(body, status=error.status_code, title=str(error.detail)[:100])
    return Response(
        content=_encoder.encode(body), status_code=error.status_code, media_type=PROBLEM_MEDIA_TYPE, headers=error.headers
    )


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    log.exception("request failed", path=request.url.path, error_type=type(error).__name__)
    body = problem("internal", "the edge could not complete the request")
    body = msgspec.structs.replace(body, status=500, title="Internal error")
    return Response(content=_encoder.encode(body), status_code=500, media_type=PROBLEM_MEDIA_TYPE)


class RequestIdMiddleware(ASGIMiddleware):
    """A well-formed X-Request-ID is kept, any other replaced by one of ours; echoed on the response."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        request_id = given if given is not None and HEADER_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await next_app(scope, receive, send_with_id)


@get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
async def healthz() -> dict[str, object]:
    return {"ok": True, "service": "web", "version": package_version()}


@get("/openapi.json", media_type=MediaType.JSON, include_in_schema=False)
async def openapi_document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    document: dict[str, Any] = request.app.state.get("openapi_document") or openapi.finished(
        request.app.openapi_schema.to_schema()
    )
    request.app.state.openapi_document = document
    return document


async def _not_served(_: Request[Any, Any, Any]) -> None:
    raise NotFoundException()


def create_app(edge: Edge, extra_routes: list[Any] | None = None) -> Litestar:
    def provide_edge() -> Edge:
        return edge

    config = AppConfig(
        route_handlers=[
            healthz,
            openapi_document,
            Router("/", route_handlers=API_ROUTES, before_request=strictly_read),
            *SIGNIN_ROUTES,
            *PAGE_ROUTES,
            *(extra_routes or []),
        ],
        dependencies={"edge": Provide(provide_edge, sync_to_thread=False)},
        exception_handlers={
            Refused: _refused,
            Unavailable: _unavailable,
            InternalFailure: _unavailable,
            ValidationException: _invalid,
            HTTPException: _http,
            Exception: _unexpected,
        },
        middleware=[RequestIdMiddleware()],
        openapi_config=OpenAPIConfig(
            title="Team members",
            version=package_version(),
            # Litestar always mounts its documentation sites (scripts from a CDN) under this router;
            # the document is served only as /openapi.json, so every path under it is a 404.
            openapi_router=Router("/schema", route_handlers=[], include_in_schema=False, before_request=_not_served),
            render_plugins=[JsonRenderPlugin()],
        ),
        request_max_body_size=edge.settings.max_body_bytes,
        debug=False,
    )
    app = Litestar.from_config(config)
    app.state.edge = edge
    return app
