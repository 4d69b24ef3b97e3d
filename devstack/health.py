"""Tells the console once every service answers `<service>.query.health`."""

import asyncio
import json
import time
from collections.abc import Sequence

import nats
from nats.errors import Error as NatsError

from devstack.service_process import console

POLL_INTERVAL = 0.5
PROGRESS_INTERVAL = 5.0


async def report_readiness(nats_url: str, services: Sequence[str], timeout: float = 120.0) -> bool:
    """True once READY is printed."""
    try:
        return await _poll_until_healthy(nats_url, services, timeout)
    except (NatsError, OSError) as error:
        console("run", f"cannot check health over {nats_url}: {error!r}")
        return False


async def _poll_until_healthy(nats_url: str, services: Sequence[str], timeout: float) -> bool:
    connection = await nats.connect(servers=[url.strip() for url in nats_url.split(",")], name="make-run-health")
    try:
        waiting = list(services)
        started = last_progress = time.monotonic()
        while waiting:
            waiting = [name for name in waiting if not await _answers_ok(connection, name)]
            now = time.monotonic()
            if not waiting:
                break
            if now - started > timeout:
                console("run", f"NOT READY after {timeout:.0f}s: no ok health answer from {', '.join(waiting)}")
                return False
            if now - last_progress >= PROGRESS_INTERVAL:
                console("run", f"waiting for health from: {', '.join(waiting)}")
                last_progress = now
            await asyncio.sleep(POLL_INTERVAL)
        console("run", f"READY: every service answers health ok ({', '.join(services)})")
        return True
    finally:
        await connection.close()


async def _answers_ok(connection: nats.NATS, service: str) -> bool:
    try:
        reply = await connection.request(f"{service}.query.health", b"{}", timeout=1)
        return json.loads(reply.data).get("ok") is True
    except (NatsError, TimeoutError, ValueError, AttributeError):
        return False
