"""The lifecycle every service shares: log, connect, serve until SIGINT/SIGTERM, stop cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog

from .logging import configure_logging
from .settings import ConfigurationError, Settings

EXIT_MISCONFIGURED = 78  # EX_CONFIG from sysexits.h


def run_service(name: str, serve: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Runs `serve(settings, stopping)` until a signal sets `stopping`; refuses to start when misconfigured."""
    try:
        settings = Settings.from_env()
    except ConfigurationError as error:
        print(f"{name}: refusing to start: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_MISCONFIGURED)
    log = configure_logging(name, settings.log_level)
    log.info("server secret loaded", source=settings.server_secret_source)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve(settings, stopping)
        structlog.get_logger().info("stopped")

    asyncio.run(main())
