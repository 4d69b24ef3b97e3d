"""What one API request costs on the bus: the edge's round trips, counted by listening on the subjects
(a plain subscription sees every request beside the queue group that answers it)."""

from __future__ import annotations

import httpx
import nats
import pytest

from shared import subjects
from teamctl.client import Client
from tests.integration.test_web_edge import a_team
from tests.services_under_test import ServiceUnderTest

pytestmark = pytest.mark.integration


async def requests_on(nc: nats.NATS, subject: str, during) -> int:
    """How many requests were sent on `subject` while `during` ran."""
    subscription = await nc.subscribe(subject)  # no callback: what arrives waits in its queue, counted
    await nc.flush()
    try:
        await during()
        # The edge's requests were answered before its response, so the server had them before this
        # flush's PING; it sends them to this connection before the PONG, and the read loop queues them first.
        await nc.flush()
        return subscription.pending_msgs
    finally:
        await subscription.unsubscribe()


async def test_a_read_by_an_api_key_asks_authorize_once(nc: nats.NATS, web: ServiceUnderTest) -> None:
    team = await a_team(Client(nc, timeout=10))
    async with httpx.AsyncClient(base_url=web.base_url, timeout=30, headers=team.headers) as http:
        answers: list[httpx.Response] = []

        async def read_members() -> None:
            answers.append(await http.get(f"/v1/orgs/{team.org_id}/members"))

        authorizations = await requests_on(nc, subjects.query("membership", "authorize"), read_members)
    assert answers[0].status_code == 200, answers[0].text
    assert authorizations == 1
