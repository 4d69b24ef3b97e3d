"""The lifecycle every service shares: log, connect, serve until SIGINT/SIGTERM, stop cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

from .logging import configure_logging
from .settings import Settings


def run_service(name: str, serve: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Runs `serve(settings, stopping)` until a signal sets `stopping`."""
    settings = Settings.from_env()
    configure_logging(name, settings.log_level)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve(settings, stopping)
        structlog.get_logger().info("stopped")

    asyncio.run(main())
