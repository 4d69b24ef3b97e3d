"""Path and query parameters with the contract's grammar: validated on the way in and shown in the
OpenAPI document (a bare `Identifier` is checked by msgspec but documented as any string)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar.params import Parameter, QueryParameter

from shared.contract.common import ID_PATTERN, MAX_EMAIL_LENGTH, SAFE_TEXT, UtcTime, whole
from shared.contract.queries import TARGET_ID_PATTERN
from shared.errors import Invalid

PAGE_CURSOR_PATTERN = whole("[A-Za-z0-9_=-]+")

OrgId = Annotated[str, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="the organization's id")]
UserId = Annotated[str, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="a member's user id")]
InvitationId = Annotated[str, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="the invitation's id")]
KeyId = Annotated[str, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="the API key's id")]

Limit = Annotated[int, Parameter(ge=1, le=1000, description="items on a page, 1..1000")]
# Membership's cursors are opaque tokens of a known alphabet; billing's and audit's only bounded.
PageCursor = Annotated[
    str | None,
    Parameter(pattern=PAGE_CURSOR_PATTERN, min_length=1, max_length=512, description="`next_cursor` of the previous page"),
]
Cursor = Annotated[
    str | None, Parameter(min_length=1, max_length=512, pattern=SAFE_TEXT, description="`next_cursor` of the previous page")
]

# Instants arrive as text and are read as RFC 3339 with an offset only: Litestar would also take a
# bare number of seconds since 1970 for a `datetime` (schemathesis sent `to=231`).
INSTANT = {"format": "date-time"}
From = Annotated[
    str | None,
    QueryParameter(name="from", max_length=64, schema_extra=INSTANT, description="entries at or after this instant (RFC 3339)"),
]
To = Annotated[str | None, Parameter(max_length=64, schema_extra=INSTANT, description="entries before this instant (RFC 3339)")]
Action = Annotated[
    str | None,
    Parameter(min_length=1, max_length=64, pattern=SAFE_TEXT, description="an action, or a prefix like `member.*`"),
]
ActorId = Annotated[str | None, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="the actor's id")]
TargetId = Annotated[
    str | None,
    Parameter(
        pattern=TARGET_ID_PATTERN,
        min_length=1,
        max_length=MAX_EMAIL_LENGTH,
        description="a target's id: an id, a role key, or an invitee's or member's email address",
    ),
]
InvitationStatus = Annotated[
    Literal["pending", "accepted", "revoked", "expired"] | None,
    Parameter(description="only the invitations of this status"),
]
ExportFormat = Annotated[Literal["csv", "ndjson"], Parameter(description="csv or ndjson")]


def instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return msgspec.convert(text, UtcTime)
    except msgspec.ValidationError:
        raise Invalid(f"`{name}` must be an RFC 3339 instant with its offset, like 2025-01-31T09:00:00Z", field=name) from None
