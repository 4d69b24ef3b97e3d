"""The lifecycle every service shares: log, connect, serve until SIGINT/SIGTERM, stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog

from .logging import configure_logging
from .settings import ConfigurationError, Settings
from .telemetry import MetricsSettings, start_exporter

EXIT_MISCONFIGURED = 78  # EX_CONFIG from sysexits.h
# The collector's thresholds (docs/decisions.md, "The collector"): at CPython's defaults (700, 10, 10) a service
# that caches state grows into full collections of 90-230 ms, each a pause of every request in flight.
GC_THRESHOLDS = (20_000, 20, 50)


def run_service(name: str, serve: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Runs `serve(settings, stopping)` until a signal sets `stopping`, serving its metrics meanwhile;
    refuses to start when misconfigured (a metrics port already taken included)."""
    try:
        settings = Settings.from_env()
        exporter = start_exporter(MetricsSettings.from_env(name))  # its own thread, never the event loop
    except ConfigurationError as error:
        print(f"{name}: refusing to start: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_MISCONFIGURED)
    gc.set_threshold(*GC_THRESHOLDS)
    log = configure_logging(name, settings.log_level)
    log.info("server secret loaded", source=settings.server_secret_source)
    log.info("metrics", url=exporter.url if exporter else "off (METRICS_PORT=0)")

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await serve(settings, stopping)
        structlog.get_logger().info("stopped")

    try:
        asyncio.run(main())
    except ConfigurationError as error:  # found by the service itself: its own settings, an address it cannot take
        print(f"{name}: refusing to start: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_MISCONFIGURED)
    finally:
        if exporter is not None:
            exporter.stop()
