"""The pages a person opens in a browser: rendered on the server, with one small script for the
actions (static/app.js), which call the /v1 API so that validation and errors have one path.

All under one router whose exception handlers answer with HTML pages, not problem+json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Router
from litestar.static_files import create_static_files_router

from . import home, invitation_link, roles, settings, team
from .rendering import PAGE_EXCEPTION_HANDLERS

STATIC_DIRECTORY = Path(__file__).resolve().parent.parent / "static"

ROUTES: list[Any] = [
    Router(
        path="/",
        route_handlers=[*home.ROUTES, *team.ROUTES, *invitation_link.ROUTES, *settings.ROUTES, *roles.ROUTES],
        exception_handlers=PAGE_EXCEPTION_HANDLERS,
    ),
    create_static_files_router(path="/static", directories=[STATIC_DIRECTORY], include_in_schema=False),
]
