"""A 3-node NATS cluster on loopback, the stream at three replicas: a node stops under load, nothing is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from devstack import nats_cluster
from shared import subjects
from teamctl.client import Client
from tests.servers import fresh_server_secret
from tests.services_under_test import ServiceUnderTest

OWNER = {"type": "user", "id": "owner-1"}


@pytest.fixture
def cluster(tmp_path):
    nodes = nats_cluster(tmp_path / "cluster", size=3)
    try:
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_until_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def until_answered(client: Client, body: dict, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.request(subjects.command("add_seats"), body)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_node_stops_during_the_load_and_nothing_is_lost(cluster, database_url, tmp_path):
    urls = ",".join(node.url for node in cluster)
    env = {"NATS_URL": urls, "DATABASE_URL": database_url, "STREAM_REPLICAS": "3", "SERVER_SECRET": fresh_server_secret()}
    services = [ServiceUnderTest(name, env, tmp_path) for name in ("membership", "billing")]
    client = None
    try:
        for service in services:
            service.start()
        client = await Client.connect(urls)
        org_id = (
            await client.command(
                "create_organization", name="Acme", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
            )
        )["result"]["org_id"]
        accepted = []
        for n in range(150):
            if n == 50:
                cluster[1].stop()  # one of three replicas gone, mid-load
            # As a platform service would: a command that got no answer (a connection on the stopped node
            # is reconnecting, on either side) is sent again with its command_id, which makes it safe.
            body = {"command_id": f"seat-{n}", "org_id": org_id, "actor": OWNER, "quantity": 1, "accept_charge_cents": 5000}
            reply = await until_answered(client, body)
            if reply.get("ok"):
                accepted.append(reply["events"][0])
        assert len(accepted) == 150
        assert len(set(accepted)) == 150  # each command recorded once, however often it was sent

        js = client.nc.jetstream()
        info = await js.stream_info(subjects.STREAM)
        assert info.config.num_replicas == 3
        deadline = time.monotonic() + 60
        charged: list[str] = []
        while time.monotonic() < deadline:
            try:
                reply = await client.query("billing", "charges", org_id=org_id, limit=1000)
            except Exception:  # billing may still be reconnecting to a node that is up
                reply = {}
            charged = [c["event_id"] for c in reply.get("result", {}).get("charges", [])]
            assert not reply.get("result", {}).get("next_cursor"), "the load fits one page"
            if len(charged) >= len(accepted):
                break
            await asyncio.sleep(0.5)
        assert sorted(charged) == sorted(accepted)  # every accepted command charged, once
        assert (await js.stream_info(subjects.STREAM)).state.messages == 1 + len(accepted)
    finally:
        if client is not None:
            await client.close()
        for service in services:
            service.stop()
