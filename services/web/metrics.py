"""The edge's Prometheus metrics: every HTTP response counted and timed by route template, method and
status (shared/telemetry.py defines the families). It wraps the whole application, so requests that
match no route (404, 405) and those refused before a handler (413) are counted too."""

from __future__ import annotations

import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from shared.telemetry import http_answered

UNMATCHED_ROUTE = "unmatched"
# Any other method string is the client's to choose: one label for all of them keeps the series bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # when the application fails before it answers

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            method = scope.get("method", "")
            route: Any = scope.get("path_template") or UNMATCHED_ROUTE  # set by Litestar's router on a match
            http_answered(route, method if method in KNOWN_METHODS else "other", status, time.perf_counter() - began)
