"""Command records: what makes a repeated `command_id` safe.

A `command_id` is one command across the whole system. A record binds it to the org, the command's name, the actor and a fingerprint of the
decoded body (without `command_id` and `correlation_id`). A true repeat gets the first reply,
refusals included; a reuse that differs in any of these gets `conflict` and learns nothing.
A success's record is written in the transaction that saves its events; a refusal's or a no-op's
right after the decision. Records live for a retention window, then a repeat is decided afresh.
The reply that carries an API key secret is kept sealed (`secrets.ReplySeal`), and only for the window.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from shared.contract import commands as cmd
from shared.contract.replies import Reply, failure

from .secrets import ReplySeal

DEFAULT_RETENTION = timedelta(hours=24)
NOT_REMEMBERED = frozenset({"validation_error", "internal"})
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class CommandFingerprint:
    """What a `command_id` is bound to, besides the org."""

    command_name: str
    actor_type: str
    actor_id: str
    body_hash: str

    @classmethod
    def of(cls, name: str, command: cmd.Command) -> CommandFingerprint:
        return cls(name, command.actor.type, command.actor.id, hashlib.sha256(_encoder.encode(_without_ids(command))).hexdigest())


def _without_ids(command: cmd.Command) -> cmd.Command:
    """The command as fingerprinted: `command_id` "-" and no `correlation_id`. A copy given the two values,
    not `msgspec.structs.replace`, which would run `__post_init__` (the address's validation) again."""
    body = copy.copy(command)
    msgspec.structs.force_setattr(body, "command_id", "-")
    msgspec.structs.force_setattr(body, "correlation_id", None)
    return body


@dataclass(frozen=True)
class CommandRecord:
    org_id: str
    command_id: str
    fingerprint: CommandFingerprint
    reply: bytes  # the encoded Reply, sealed when `sealed`
    sealed: bool
    recorded_at: datetime
    stale_before: datetime  # a record of this command older than this is past the window, and replaced

    def context(self) -> bytes:
        return record_context(self.org_id, self.command_id)


def record_context(org_id: str, command_id: str) -> bytes:
    return f"{org_id}\x1f{command_id}".encode()


def is_remembered(reply: Reply) -> bool:
    """Successes and refusals stand; a malformed body or a failure of ours is decided afresh."""
    return reply.ok or (reply.error is not None and reply.error.code not in NOT_REMEMBERED)


def new_record(
    org_id: str,
    command_id: str,
    fingerprint: CommandFingerprint,
    reply: Reply,
    seal: ReplySeal | None,
    now: datetime,
    retention: timedelta,
) -> CommandRecord:
    """`seal` is given for a reply that carries a secret."""
    encoded = _encoder.encode(reply)
    if seal is not None:
        encoded = seal.seal(encoded, record_context(org_id, command_id))
    return CommandRecord(org_id, command_id, fingerprint, encoded, seal is not None, now, now - retention)


def repeat_reply(record: CommandRecord, org_id: str, fingerprint: CommandFingerprint, seal: ReplySeal) -> Reply:
    """The reply to a command whose id was already recorded (in this organization or another)."""
    if record.org_id != org_id or record.fingerprint != fingerprint:
        return failure(
            "conflict",
            "this command_id was already used for another command; use a new command_id",
            {"reason": "command_id_reused"},
        )
    encoded = seal.open(record.reply, record.context()) if record.sealed else record.reply
    if encoded is None:
        return failure(
            "conflict",
            "the first reply to this command can no longer be produced (the server secret changed); use a new command_id",
            {"reason": "reply_unavailable"},
        )
    return msgspec.json.decode(encoded, type=Reply)
