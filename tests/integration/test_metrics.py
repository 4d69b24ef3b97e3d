"""Every service's /metrics, scraped from a running stack: the names are there, and they move."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import SmtpSink, free_port
from shared.telemetry import MetricsSettings
from teamctl.client import Client
from tests.services_under_test import ServiceUnderTest
from tests.waiting import eventually

OWNER = {"type": "user", "id": "owner-1"}
INVITES = 5
PROJECTORS = ("billing", "audit", "notifier")

# Every family the operator's dashboard reads, by the service that exports it.
FAMILIES = {
    "membership": [
        "team_members_commands",
        "team_members_command_duration_seconds",
        "team_members_authorize",
        "team_members_authorize_duration_seconds",
        "team_members_relay_active",
        "team_members_relay_published_notification_id",
        "team_members_relay_store_notification_id",
        "team_members_relay_lag_notifications",
        "process_cpu_seconds",
    ],
    **{
        name: [
            "team_members_consumer_position",
            "team_members_consumer_event_lag_seconds",
            "team_members_consumer_behind_messages",
            "team_members_consumer_ack_pending",
            "team_members_consumer_stream_last_sequence",
            "team_members_dead_letters",
        ]
        for name in PROJECTORS
    },
}
FAMILIES["notifier"] += ["team_members_notifier_deliveries", "team_members_notifier_send_attempts"]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return {family.name for family in text_string_to_metric_families(response.read().decode())}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def stops_cleanly(service: ServiceUnderTest) -> None:
    """SIGTERM: the exporter's thread must not keep the process up, nor fail its exit."""
    service.stop()
    assert service.popen is not None and service.popen.returncode == 0, service.output()


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[dict[str, str]]:
    """The four services as processes, each with a free metrics port; their endpoints by name."""
    endpoints = {}
    with ExitStack() as started:
        for name in ("membership", *PROJECTORS):
            port = free_port()
            env = {**service_env, "SMTP_URL": smtp_sink.url, "METRICS_PORT": str(port), "METRICS_SAMPLE_SECONDS": "0.2"}
            service = ServiceUnderTest(name, env, tmp_path).start()
            started.callback(stops_cleanly, service)
            endpoints[name] = f"http://127.0.0.1:{port}/metrics"
        yield endpoints


async def test_every_endpoint_exports_its_families_and_they_move(stack, nc):
    client = Client(nc)
    created = await client.command(
        "create_organization", name="Metrics", plan="pro", owner={"user_id": "owner-1", "email": "o@acme.io"}
    )
    assert created["ok"], created
    org_id = created["result"]["org_id"]
    await client.command("add_seats", org_id=org_id, actor=OWNER, quantity=INVITES, accept_charge_cents=10**7)
    for n in range(INVITES):
        reply = await client.command("invite_member", org_id=org_id, actor=OWNER, email=f"m{n}@example.com", role="developer")
        assert reply["ok"], reply
    refused = await client.command(
        "invite_member", org_id=org_id, actor={"type": "user", "id": "stranger"}, email="x@example.com", role="developer"
    )
    assert refused["error"]["code"] == "permission_denied"
    malformed = await client.request("membership.cmd.invite_member", b"{not json")
    assert malformed["error"]["code"] == "validation_error"
    for _ in range(3):
        assert (await client.query("membership", "authorize", org_id=org_id, user_id="owner-1", permission="org:read"))["result"][
            "allowed"
        ]
    for _ in range(2):
        assert not (await client.query("membership", "authorize", org_id=org_id, user_id="stranger", permission="org:read"))[
            "result"
        ]["allowed"]
    stream_last = (await nc.jetstream().stream_info("MEMBERSHIP")).state.last_seq
    assert stream_last >= INVITES + 2

    for name, url in stack.items():
        missing = set(FAMILIES[name]) - await asyncio.to_thread(families, url)
        assert not missing, f"{name} does not export {sorted(missing)}"

    membership = await asyncio.to_thread(scrape, stack["membership"])
    assert value(membership, "team_members_commands_total", command="invite_member", outcome="ok") >= INVITES
    assert value(membership, "team_members_commands_total", command="invite_member", outcome="permission_denied") >= 1
    assert value(membership, "team_members_commands_total", command="invite_member", outcome="validation_error") >= 1
    assert value(membership, "team_members_command_duration_seconds_count", command="invite_member", outcome="ok") >= INVITES
    assert value(membership, "team_members_authorize_total", decision="allowed") >= 3
    assert value(membership, "team_members_authorize_total", decision="denied") >= 2
    assert value(membership, "team_members_authorize_duration_seconds_count", decision="allowed") >= 3

    async def relay_caught_up() -> dict:
        samples = await asyncio.to_thread(scrape, stack["membership"])
        caught_up = (
            value(samples, "team_members_relay_active") == 1
            and value(samples, "team_members_relay_store_notification_id") >= stream_last
            and value(samples, "team_members_relay_published_notification_id") >= stream_last
            and value(samples, "team_members_relay_lag_notifications") == 0
        )
        return samples if caught_up else {}

    assert await eventually(relay_caught_up, timeout=20), "the relay's metrics never showed it caught up"

    for name in PROJECTORS:

        async def consumer_caught_up(name: str = name) -> dict:
            samples = await asyncio.to_thread(scrape, stack[name])
            caught_up = (
                value(samples, "team_members_consumer_position", consumer=name) >= stream_last
                and value(samples, "team_members_consumer_stream_last_sequence", consumer=name) >= stream_last
                and value(samples, "team_members_consumer_event_lag_seconds_count", consumer=name) >= stream_last
                and ("team_members_consumer_behind_messages", (("consumer", name),)) in samples
                and value(samples, "team_members_consumer_behind_messages", consumer=name) == 0
                and ("team_members_dead_letters_total", (("consumer", name),)) in samples
            )
            return samples if caught_up else {}

        assert await eventually(consumer_caught_up, timeout=20), f"{name}'s consumer metrics never reached {stream_last}"

    async def mails_sent() -> dict:
        samples = await asyncio.to_thread(scrape, stack["notifier"])
        sent = (
            value(samples, "team_members_notifier_deliveries", status="sent") >= INVITES
            and value(samples, "team_members_notifier_send_attempts_total", result="sent") >= INVITES
            and ("team_members_notifier_deliveries", (("status", "failed"),)) in samples
        )
        return samples if sent else {}

    assert await eventually(mails_sent, timeout=30), "the notifier's delivery metrics never counted the invitations sent"


def test_metrics_settings_defaults_are_distinct_and_zero_turns_off():
    ports = [MetricsSettings.from_env(name, {}).port for name in ("membership", "billing", "audit", "notifier")]
    assert len(set(ports)) == 4 and all(ports)
    assert not MetricsSettings.from_env("billing", {"METRICS_PORT": "0"}).enabled
    assert MetricsSettings.from_env("billing", {}).host == "127.0.0.1"


def test_a_taken_metrics_port_stops_the_service_with_a_clear_message(service_env, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceUnderTest("audit", {**service_env, "METRICS_PORT": str(port)}, tmp_path).start(wait=False)
        assert service.popen is not None
        assert service.popen.wait(timeout=30) == 78
    assert f"127.0.0.1:{port}" in service.output() and "METRICS_PORT" in service.output()


def test_make_run_gives_each_service_its_default_port_or_a_free_one_and_prints_them(capsys):
    import socket

    from devstack.run import metrics_ports, print_metrics_endpoints
    from shared.telemetry import DEFAULT_PORTS

    names = ["membership", "billing", "audit", "notifier"]
    assert metrics_ports(names, {"METRICS_PORT": "0"}) == dict.fromkeys(names, 0)
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # taken already, by another run: the same case
            taken.bind(("127.0.0.1", DEFAULT_PORTS["billing"]))
        ports = metrics_ports(names, {})
    assert ports["billing"] != DEFAULT_PORTS["billing"] and ports["billing"] > 0
    assert len(set(ports.values())) == 4
    print_metrics_endpoints(ports, "127.0.0.1")
    printed = capsys.readouterr().out
    for name, port in ports.items():
        assert f"metrics of {name}: http://127.0.0.1:{port}/metrics" in printed


def test_the_grafana_dashboard_reads_only_metrics_the_services_export():
    import json
    import re

    from prometheus_client import REGISTRY

    import shared.telemetry  # noqa: F401  (defines the families)

    families = {family.name for family in REGISTRY.collect()}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "team-members.json").read_text())
    read = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"team_members_\w+", target["expr"])
    }
    assert read and read <= families, sorted(read - families)
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for family in ("commands", "command latency", "authorize", "consumer lag", "dead letters", "relay lag", "deliveries"):
        assert family in titles
