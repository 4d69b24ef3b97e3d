"""A JSON Schema of the whole contract, generated from the msgspec types.

`python -m shared.schema` rewrites docs/contract.schema.json; a test fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from .contract import commands, queries
from .contract.events import EVENT_DATA, Envelope
from .contract.replies import Reply

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "contract.schema.json"

_QUERIES: dict[str, type] = {
    "membership.query.get_organization": queries.GetOrganization,
    "membership.query.members": queries.MembersQuery,
    "membership.query.invitations": queries.InvitationsQuery,
    "membership.query.api_keys": queries.ApiKeysQuery,
    "membership.query.roles": queries.RolesQuery,
    "membership.query.invitation": queries.InvitationLinkQuery,
    "membership.query.user_orgs": queries.UserOrgsQuery,
    "membership.query.seat_quote": queries.SeatQuoteQuery,
    "membership.query.authorize": queries.Authorize,
    "billing.query.charges": queries.ChargesQuery,
    "billing.query.upcoming_invoice": queries.UpcomingInvoiceQuery,
    "billing.query.invoices": queries.InvoicesQuery,
    "audit.query.search": queries.AuditSearch,
    "audit.query.verify": queries.AuditVerify,
    "audit.query.get_event": queries.AuditGetEvent,
    "audit.query.export": queries.AuditExport,
    "notifier.query.deliveries": queries.DeliveriesQuery,
    "<service>.query.health": queries.Health,
}
_RESULTS: list[type] = [
    queries.SeatQuote,
    queries.OrganizationView,
    queries.MembersPage,
    queries.InvitationsPage,
    queries.ApiKeysPage,
    queries.RolesPage,
    queries.InvitationLinkView,
    queries.UserOrgsPage,
    queries.AuthorizeResult,
    queries.HealthResult,
]


def contract_schema() -> dict[str, Any]:
    command_types = list(commands.COMMANDS.values())
    query_types = list(_QUERIES.values())
    data_types = list(EVENT_DATA.values())
    every_type = [*command_types, *query_types, *data_types, *_RESULTS, Envelope, Reply]
    schemas, components = msgspec.json.schema_components(every_type, ref_template="#/$defs/{name}")
    by_type = dict(zip(every_type, schemas, strict=False))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Team Members wire contract v1",
        "commands": {f"membership.cmd.{name}": by_type[kind] for name, kind in commands.COMMANDS.items()},
        "queries": {subject: by_type[kind] for subject, kind in _QUERIES.items()},
        "events": {
            "envelope": by_type[Envelope],
            "data": {name: by_type[kind] for name, kind in EVENT_DATA.items()},
            "subject": "membership.events.<org_id>.<EventType>",
        },
        "reply": by_type[Reply],
        "results": {kind.__name__: by_type[kind] for kind in _RESULTS},
        "$defs": components,
    }


def render() -> str:
    return json.dumps(contract_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")
