"""A request's context (command, ids, org) is on every line logged while it is handled, and on no other."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import bind_request_context, configure_logging, reset_request_context


@pytest.fixture
def configured() -> Iterator[None]:
    """The test configures logging itself (to the sys.stderr of the moment: capsys's); this puts it back."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)
        structlog.contextvars.unbind_contextvars("service")


def test_lines_logged_while_a_request_is_handled_carry_its_context_and_no_other_line_does(
    capsys: pytest.CaptureFixture[str], configured: None
) -> None:
    configure_logging("membership", "info")
    log = structlog.get_logger()

    async def handle(command_id: str, org_id: str) -> None:
        token = bind_request_context(command="invite_member", command_id=command_id, org_id=org_id, correlation_id=None)
        try:
            await asyncio.sleep(0)  # the other request runs meanwhile
            log.info("handled", org_id="named-on-the-line")
            log.info("handled")
        finally:
            reset_request_context(token)
        log.info("after")

    async def both() -> None:
        await asyncio.gather(handle("c1", "acme"), handle("c2", "globex"))

    asyncio.run(both())
    log.info("outside")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    handled = [(line["command_id"], line["org_id"]) for line in lines if line["event"] == "handled"]
    assert sorted(handled) == [("c1", "acme"), ("c1", "named-on-the-line"), ("c2", "globex"), ("c2", "named-on-the-line")]
    assert all(
        line["command"] == "invite_member" and line["correlation_id"] is None for line in lines if line["event"] == "handled"
    )
    assert all(line["service"] == "membership" for line in lines)
    others = [line for line in lines if line["event"] in ("after", "outside")]
    assert len(others) == 3 and not any({"command", "command_id", "org_id", "correlation_id"} & line.keys() for line in others)
