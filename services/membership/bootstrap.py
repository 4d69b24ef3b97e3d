"""Composition root: the application on PostgreSQL, its NATS handlers and the relay."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

import structlog

from shared import telemetry
from shared.bus import connect, declare_streams
from shared.clock import SystemClock
from shared.periodic import every
from shared.responder import Responder
from shared.settings import Settings, postgres_env

from .access_bucket import AccessBucket
from .access_index import AccessIndex, IndexFollower, stream_position
from .application import MembershipApplication
from .config import MembershipSettings
from .event_writer import EventWriter
from .handlers import MembershipHandlers
from .relay import Relay
from .secrets import Secrets

CONCURRENT_REQUESTS = 128  # commands to different organizations overlap, and share a group commit


def build_application(settings: Settings, own: MembershipSettings | None = None) -> MembershipApplication:
    own = own or MembershipSettings.from_env()
    env = postgres_env(settings.database_url, pool_size=own.worker_threads + 2)
    return MembershipApplication(SystemClock(), Secrets(settings.server_secret), env=env, command_retention=own.command_retention)


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    log = structlog.get_logger()
    await declare_streams(settings.nats_url, settings.stream_replicas)
    own = MembershipSettings.from_env()
    app = await asyncio.to_thread(build_application, settings, own)
    executor = ThreadPoolExecutor(max_workers=own.worker_threads, thread_name_prefix="membership")
    nc = await connect(settings.nats_url)
    # The access index: the stream's position first, then the store, then the stream from that position,
    # on a connection of its own (its ordered consumer's resets never touch the responder's connection).
    follower_connection = await connect(settings.nats_url)
    start = await stream_position(follower_connection.jetstream())
    index = AccessIndex(app.clock.now)
    await asyncio.to_thread(index.load, app)
    following = IndexFollower(index, app, follower_connection.jetstream(), start + 1)
    follower = asyncio.create_task(following.run())
    responder = Responder(nc, concurrency=CONCURRENT_REQUESTS)
    writer = EventWriter(app, settings.database_url)
    handlers = MembershipHandlers(app, executor, index, writer)
    await handlers.subscribe(responder)
    cleanup = asyncio.create_task(
        every(own.command_cleanup_seconds, handlers.forget_old_commands, stopping, failed="dropping old command records failed")
    )
    relay_connection = await connect(settings.nats_url)
    access = AccessBucket(app, relay_connection.jetstream(), settings.stream_replicas, own.access_heartbeat_seconds)
    # While it holds the lock the relay feeds the index, and the follower's subscription stands down.
    relaying = Relay(app, relay_connection, settings.database_url, own.relay_batch_size, access=access, index=following)
    handlers.group_commit.listeners.append(relaying.offer)
    relay = asyncio.create_task(relaying.run())
    sampling = asyncio.create_task(telemetry.sample("membership", stopping, telemetry.relay_probe(relaying)))
    log.info("membership ready")
    try:
        await stopping.wait()
    finally:
        await responder.stop()
        await nc.drain()
        await handlers.runner.settled()
        await cleanup
        await sampling
        for task in (relay, follower):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await writer.close()
        await relay_connection.close()
        await follower_connection.close()
        executor.shutdown(wait=True)
        app.close()
