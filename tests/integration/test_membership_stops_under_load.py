"""Membership told to stop (SIGTERM) while commands keep coming ends by itself, cleanly: its shutdown
cancels the relay and the access index's follower and awaits them, so a cancel swallowed on the way
(Python 3.11's `asyncio.wait_for`, ours or nats-py's) would hold the process until a supervisor kills it."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from teamctl.client import Client
from tests.services_under_test import ServiceUnderTest

WORKERS = 16
# Not a measure of speed: only how long a hung process is given before it is killed, which fails the test.
HUNG_AFTER_SECONDS = 120
ANSWERED_BEFORE_THE_SIGNAL = 300


def ended_by_itself(process: subprocess.Popen[bytes]) -> int:
    """The exit code; a process still running long after the signal is killed (-9)."""
    try:
        return process.wait(timeout=HUNG_AFTER_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


async def keep_commanding(
    client: Client, org_id: str, answered: list[None], enough: asyncio.Event, stopped: asyncio.Event
) -> None:
    while not stopped.is_set():
        try:
            reply = await client.command("create_api_key", org_id=org_id, name="k", permissions=["gateway:use"])
        except Exception:  # no responders, or no reply: the service is going
            if stopped.is_set():
                return
            raise
        assert reply["ok"], reply
        answered.append(None)
        if len(answered) >= ANSWERED_BEFORE_THE_SIGNAL:
            enough.set()


@pytest.mark.parametrize("attempt", range(3))
async def test_a_sigterm_while_commands_flow_ends_the_process_by_itself_with_a_clean_exit(
    membership: ServiceUnderTest, clean_nats: str, attempt: int
):
    client = await Client.connect(clean_nats, timeout=2.0)
    try:
        orgs = []
        for n in range(WORKERS):
            reply = await client.command(
                "create_organization", name=f"Org {n}", plan="pro", owner={"user_id": f"u{n}", "email": f"o{n}@x.io"}
            )
            assert reply["ok"], reply
            orgs.append(reply["result"]["org_id"])
        answered: list[None] = []
        enough, stopped = asyncio.Event(), asyncio.Event()
        workers = [asyncio.create_task(keep_commanding(client, org_id, answered, enough, stopped)) for org_id in orgs]
        await enough.wait()
        assert membership.popen is not None
        membership.popen.send_signal(signal.SIGTERM)
        stopped.set()
        returncode = await asyncio.to_thread(ended_by_itself, membership.popen)
        await asyncio.gather(*workers)
    finally:
        await client.close()
    assert returncode == 0, membership.output()
    assert '"event": "stopped"' in membership.output()
