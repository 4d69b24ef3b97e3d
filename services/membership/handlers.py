"""NATS subscribers: decode the request once, hand it to the command runner or a query, reply once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from nats.aio.msg import Msg

from shared import subjects, telemetry
from shared.contract import commands as cmd
from shared.contract import queries as q
from shared.contract.replies import Reply
from shared.logging import bind_request_context, reset_request_context
from shared.requests import reply_handler
from shared.responder import Responder
from shared.version import health

from .access_index import AccessIndex
from .application import Decision, MembershipApplication, org_id_for
from .event_writer import EventWriter
from .group_commit import GroupCommit
from .runner import CommandRunner

QUEUE_GROUP = "membership"
log = structlog.get_logger()


class MembershipHandlers:
    def __init__(
        self, app: MembershipApplication, executor: ThreadPoolExecutor, index: AccessIndex, writer: EventWriter | None = None
    ) -> None:
        """`index` is loaded already; the runner hands it each saved decision before the reply. `writer` saves
        on the loop (PostgreSQL); without it the application saves, in a thread."""
        self.app = app
        self.index = index
        self.writer = writer
        self.group_commit = GroupCommit(self._save)
        self.runner = CommandRunner(
            app, executor, record=self.group_commit.submit, saved=index.adopt, known_version=index.version
        )

    async def _save(self, decisions: list[Decision]) -> None:
        if self.writer is None:
            await self.runner.in_thread(self.app.record, decisions)
        else:
            await self.writer.save(decisions)

    def command_handler(self, name: str) -> Callable[[bytes], Awaitable[bytes]]:
        async def handle(command: cmd.Command) -> Reply:
            org_id = org_id_for(command)
            bound = bind_request_context(
                command=name, command_id=command.command_id, org_id=org_id, correlation_id=command.correlation_id
            )
            try:
                reply = await self.runner.run(name, command, org_id)
                log.info("command handled", ok=reply.ok, error=reply.error.code if reply.error else None)
                return reply
            finally:
                reset_request_context(bound)

        return reply_handler(cmd.COMMANDS[name], handle, telemetry.command_observer(name))

    def query_handlers(self) -> dict[str, Callable[[bytes], Awaitable[bytes]]]:
        for_org = self.runner.for_org

        async def get_organization(query: q.GetOrganization) -> Any:
            return await for_org(query.org_id, self.app.view_organization, query.org_id)

        async def members(query: q.MembersQuery) -> Any:
            return await for_org(query.org_id, self.app.members, query)

        async def invitations(query: q.InvitationsQuery) -> Any:
            return await for_org(query.org_id, self.app.invitations, query)

        async def api_keys(query: q.ApiKeysQuery) -> Any:
            return await for_org(query.org_id, self.app.api_keys, query)

        async def roles(query: q.RolesQuery) -> Any:
            return await for_org(query.org_id, self.app.roles, query)

        async def invitation(query: q.InvitationLinkQuery) -> Any:
            org_id = await self.runner.in_thread(self.app.org_of_invitation, query.invitation_id)
            return await for_org(org_id, self.app.invitation_behind_link, org_id, query)

        async def seat_quote(query: q.SeatQuoteQuery) -> Any:
            return await for_org(query.org_id, self.app.seat_quote, query.org_id)

        index = self.index

        async def authorize(query: q.Authorize) -> Any:
            """From the access index alone: no lock, no thread, no store."""
            if query.api_key is not None:
                return index.authorize_key(query.api_key, query.permission, query.project_id)
            assert query.org_id is not None and query.user_id is not None
            return index.authorize_user(query.org_id, query.user_id, query.permission, query.project_id)

        async def user_orgs(query: q.UserOrgsQuery) -> Any:
            return index.user_orgs(query)

        async def healthy(_: q.Health) -> Any:
            return health("membership")

        return {
            "get_organization": reply_handler(q.GetOrganization, get_organization),
            "members": reply_handler(q.MembersQuery, members),
            "invitations": reply_handler(q.InvitationsQuery, invitations),
            "api_keys": reply_handler(q.ApiKeysQuery, api_keys),
            "roles": reply_handler(q.RolesQuery, roles),
            "invitation": reply_handler(q.InvitationLinkQuery, invitation),
            "seat_quote": reply_handler(q.SeatQuoteQuery, seat_quote),
            "authorize": reply_handler(q.Authorize, authorize, telemetry.observe_authorize),
            "user_orgs": reply_handler(q.UserOrgsQuery, user_orgs),
            "health": reply_handler(q.Health, healthy),
        }

    async def subscribe(self, responder: Responder) -> None:
        for name in cmd.COMMANDS:
            await responder.serve(subjects.command(name), QUEUE_GROUP, self.command_handler(name))
        for name, handler in self.query_handlers().items():
            if name == "authorize":
                await self._serve_inline(responder, subjects.query("membership", name), handler)
            else:
                await responder.serve(subjects.query("membership", name), QUEUE_GROUP, handler)

    @staticmethod
    async def _serve_inline(responder: Responder, subject: str, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """`authorize` never waits on anything (the access index is in memory): answered in the
        subscription's own callback, without a task per request. `reply_handler` turns any failure into
        a reply; the connection's drain at shutdown answers what was taken."""

        async def on_request(msg: Msg) -> None:
            reply = await handler(msg.data)
            if msg.reply:
                try:
                    await responder.nc.publish(msg.reply, reply)  # as the responder does: no request headers echoed
                except Exception:
                    log.exception("reply could not be sent", subject=msg.subject)

        await responder.nc.subscribe(subject, queue=QUEUE_GROUP, cb=on_request)

    async def forget_old_commands(self) -> None:
        """Command records past the retention window are dropped, so the table stays the window's size."""
        forgotten = await self.runner.in_thread(lambda: self.app.forget_commands(self.app.clock.now()))
        if forgotten:
            log.info("command records past retention dropped", count=forgotten)
