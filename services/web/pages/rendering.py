"""Pages as HTML: one Jinja2 environment (autoescaped), money and dates for display, and the HTML
error pages a browser gets where the API answers problem+json."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from shared.contract.common import ID_PATTERN
from shared.errors import Refused

from ..bus import InternalFailure, Unavailable
from ..callers import Access, SignedInUser, Unauthenticated
from ..problems import STATUS_OF_CODE

log = structlog.get_logger()

HTML_HEADERS = {
    # Pages run only our own script and style; nothing from elsewhere, nothing inline.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def dollars(cents: int) -> str:
    """Integer cents for display only: `$10`, `$5.16`, `-$3.20`."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    return f"{sign}${whole:,}" if part == 0 else f"{sign}${whole:,}.{part:02d}"


_IDENTIFIER = re.compile(ID_PATTERN)


def identifier(value: str) -> str:
    """A path's id, checked against the contract's grammar: anything else is a page that does not exist."""
    if not _IDENTIFIER.match(value):
        raise NotFoundException()
    return value


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


def day(value: datetime | str | None) -> str:
    """`27 Dec 2025`."""
    if value is None:
        return "never"
    moment = _as_datetime(value)
    return f"{moment.day} {moment:%b %Y}"


def short_day(value: datetime | str) -> str:
    """`27 Dec`: a period's end, as the Add Member dialog says it."""
    moment = _as_datetime(value)
    return f"{moment.day} {moment:%b}"


def moment(value: datetime | str | None) -> str:
    """`27 Dec 2025, 14:05 UTC`."""
    if value is None:
        return ""
    at = _as_datetime(value)
    return f"{at.day} {at:%b %Y, %H:%M} UTC"


_environment = Environment(
    loader=PackageLoader("services.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters.update(dollars=dollars, day=day, short_day=short_day, moment=moment)


@dataclass(frozen=True)
class NavEntry:
    label: str
    href: str
    current: bool


# Each page, and the permission that opens it: navigation shows only what the user may open.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("Team", "team", "members:read"),
    ("API keys", "api-keys", "api_keys:read"),
    ("Billing", "billing", "billing:read"),
    ("Audit log", "audit", "audit:read"),
    ("Roles", "roles", "org:manage"),
)


def navigation(org_id: str, access: Access, current: str) -> list[NavEntry]:
    return [
        NavEntry(label, f"/orgs/{org_id}/settings/{slug}", slug == current)
        for label, slug, permission in SECTIONS
        if access.allows(permission)
    ]


def csrf_token_of(user: SignedInUser | None) -> str:
    """The session's CSRF token, for the page's script to send as X-CSRF-Token (empty never passes)."""
    return getattr(user, "csrf_token", "") if user is not None else ""


def render(
    request: Request[Any, Any, Any],
    template: str,
    status_code: int = 200,
    user: SignedInUser | None = None,
    **context: Any,
) -> Response[str]:
    html = _environment.get_template(template).render(
        csrf_token=csrf_token_of(user),
        user=user,
        request_path=request.url.path,
        **context,
    )
    return Response(content=html, status_code=status_code, media_type=MediaType.HTML, headers=HTML_HEADERS)


# What a person reads for each refusal a page can meet, and what they can do about it.
_ERROR_TEXT: dict[int, tuple[str, str]] = {
    401: ("Sign in to continue", "This page needs you to be signed in."),
    403: ("You can't open this page", "Your role in this organization does not allow it. Ask an owner if you need access."),
    404: ("Page not found", "There is nothing at this address. Check the link, or go back to your team."),
    400: ("This address is not valid", "Check the link, or go back to your team."),
    410: ("This has expired", "Ask whoever sent it for a new one."),
    503: ("Try again in a moment", "A service behind this page is not answering right now."),
}


def error_page(request: Request[Any, Any, Any], status_code: int, detail: str | None = None) -> Response[str]:
    title, explanation = _ERROR_TEXT.get(status_code, ("Something went wrong", "The page could not be shown."))
    return render(
        request,
        "error.html",
        status_code=status_code,
        title=title,
        explanation=explanation,
        detail=detail,
        status=status_code,
        sign_in_next=request.url.path if status_code == 401 else None,
    )


def page_refused(request: Request[Any, Any, Any], refusal: Refused) -> Response[str]:
    if isinstance(refusal, Unauthenticated):
        return error_page(request, 401)
    return error_page(request, STATUS_OF_CODE.get(refusal.code, 400), refusal.message)


def page_unavailable(request: Request[Any, Any, Any], failure: Exception) -> Response[str]:
    log.warning("a service did not answer a page", failure=str(failure), path=request.url.path)
    response = error_page(request, 503)
    response.headers["Retry-After"] = str(request.app.state.edge.settings.retry_after_seconds)
    return response


def page_failed(request: Request[Any, Any, Any], error: Exception) -> Response[str]:
    log.exception("page failed", path=request.url.path, error_type=type(error).__name__)
    return error_page(request, 500)


def page_invalid(request: Request[Any, Any, Any], _: ValidationException) -> Response[str]:
    return error_page(request, 400, "The address is not valid.")


def page_http(request: Request[Any, Any, Any], error: HTTPException) -> Response[str]:
    return error_page(request, error.status_code)


PAGE_EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    ValidationException: page_invalid,
    HTTPException: page_http,
    Refused: page_refused,
    Unavailable: page_unavailable,
    InternalFailure: page_unavailable,
    Exception: page_failed,
}
