"""Path and query parameters with the contract's grammar: validated on the way in and shown in the
OpenAPI document (a bare `Identifier` is checked by msgspec but documented as any string)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from litestar.params import Parameter

from shared.contract.common import ID_PATTERN, SAFE_TEXT, whole

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

From = Annotated[datetime | None, Parameter(query="from", description="entries at or after this instant (RFC 3339)")]
To = Annotated[datetime | None, Parameter(description="entries before this instant (RFC 3339)")]
Action = Annotated[
    str | None,
    Parameter(min_length=1, max_length=64, pattern=SAFE_TEXT, description="an action, or a prefix like `member.*`"),
]
ActorId = Annotated[str | None, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="the actor's id")]
TargetId = Annotated[str | None, Parameter(pattern=ID_PATTERN, min_length=1, max_length=64, description="a target's id")]
ExportFormat = Annotated[Literal["csv", "ndjson"], Parameter(description="csv or ndjson")]
