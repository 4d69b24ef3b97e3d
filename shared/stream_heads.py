"""How far the MEMBERSHIP stream goes for one organization: what a projection has yet to consume."""

from __future__ import annotations

import msgspec
import nats.js.errors
from nats.js import JetStreamContext

from . import subjects
from .contract.events import decode_envelope


class StreamHeads:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def __call__(self, org_id: str) -> int:
        return await self.last_sequence(org_id)

    async def last_sequence(self, org_id: str) -> int:
        """The membership `sequence` of the organization's newest event on the stream (0: none, or unreadable)."""
        try:
            newest = await self.js.get_last_msg(subjects.STREAM, subjects.event(org_id, "*"))
        except nats.js.errors.NotFoundError:
            return 0
        try:
            return decode_envelope(newest.data or b"").sequence
        except (msgspec.DecodeError, msgspec.ValidationError):
            return 0
