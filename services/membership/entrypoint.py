"""NATS subscribers: parse the request, hand it to the application, reply once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError

from shared import subjects
from shared.contract import commands as cmd
from shared.contract import queries as q
from shared.contract.replies import Reply
from shared.requests import reply_handler
from shared.responder import Responder
from shared.version import health

from .application import CONCURRENT_CHANGE, CONFLICT_RETRIES, Decision, MembershipApplication, org_id_for
from .group_commit import GroupCommit
from .keyed_lock import KeyedLock
from .secrets import parse_api_key

QUEUE_GROUP = "membership"


class MembershipEndpoints:
    def __init__(self, app: MembershipApplication, executor: ThreadPoolExecutor) -> None:
        self.app = app
        self.executor = executor
        self.org_locks = KeyedLock()
        self.group_commit = GroupCommit(self._record)
        self._background: set[asyncio.Task[Any]] = set()

    async def _record(self, decisions: list[Decision]) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.app.record, decisions)

    async def _for_org(self, org_id: str, fn: Any, *args: Any) -> Any:
        """One piece of work per organization at a time: the application shares its cached aggregate."""
        async with self.org_locks.hold(org_id):
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _in_background(self, work: Any) -> None:
        """Work after the reply (a snapshot): its failure is logged, never the command's."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished_in_background)

    def _finished_in_background(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            structlog.get_logger().error("background work failed", exc_info=task.exception())

    async def _decide_and_record(self, name: str, org_id: str, command: cmd.Command) -> Reply:
        loop = asyncio.get_running_loop()
        for _ in range(CONFLICT_RETRIES):
            decision = await loop.run_in_executor(self.executor, self.app.decide, name, command)
            if not decision.recorded:
                return decision.reply
            try:
                await self.group_commit.submit(decision)
            except IntegrityError:
                continue  # another instance wrote first: the application reloads the organization
            self._in_background(self._for_org(org_id, self.app.snapshot_if_due, decision))
            return decision.reply
        return CONCURRENT_CHANGE

    def command_handler(self, name: str) -> Any:
        async def handle(command: cmd.Command) -> Reply:
            org_id = command.org_id or org_id_for(command.command_id)
            with structlog.contextvars.bound_contextvars(
                command=name, command_id=command.command_id, org_id=org_id, correlation_id=command.correlation_id
            ):
                async with self.org_locks.hold(org_id):
                    reply = await self._decide_and_record(name, org_id, command)
                structlog.get_logger().info("command handled", ok=reply.ok, error=reply.error.code if reply.error else None)
                return reply

        return reply_handler(cmd.COMMANDS[name], handle)

    def query_handlers(self) -> dict[str, Any]:
        async def get_organization(query: q.GetOrganization) -> Any:
            return await self._for_org(query.org_id, self.app.view_organization, query.org_id)

        async def seat_quote(query: q.SeatQuoteQuery) -> Any:
            return await self._for_org(query.org_id, self.app.seat_quote, query.org_id)

        async def authorize(query: q.Authorize) -> Any:
            if query.api_key is not None:
                named = parse_api_key(query.api_key)
                org_id = named[0] if named else "-"
                return await self._for_org(org_id, self.app.authorize_key, query.api_key, query.permission)
            return await self._for_org(query.org_id, self.app.authorize_user, query.org_id, query.user_id, query.permission)

        async def healthy(_: q.Health) -> Any:
            return health("membership")

        return {
            "get_organization": reply_handler(q.GetOrganization, get_organization),
            "seat_quote": reply_handler(q.SeatQuoteQuery, seat_quote),
            "authorize": reply_handler(q.Authorize, authorize),
            "health": reply_handler(q.Health, healthy),
        }

    async def subscribe(self, responder: Responder) -> None:
        for name in cmd.COMMANDS:
            await responder.serve(subjects.command(name), QUEUE_GROUP, self.command_handler(name))
        for name, handler in self.query_handlers().items():
            await responder.serve(subjects.query("membership", name), QUEUE_GROUP, handler)
