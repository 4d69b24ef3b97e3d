"""Every service's /metrics, scraped from a running stack: the names are there, and they move."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import SmtpSink, free_port
from services.membership.domain.permissions import permissions_of
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
FAMILIES["web"] = ["team_members_http_requests", "team_members_http_request_duration_seconds", "process_cpu_seconds"]


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
    """The five services as processes, each with a free metrics port; their endpoints by name (the edge's
    base URL as `web-http`)."""
    endpoints = {}
    with ExitStack() as started:
        for name in ("membership", *PROJECTORS, "web"):
            port = free_port()
            env = {**service_env, "SMTP_URL": smtp_sink.url, "METRICS_PORT": str(port), "METRICS_SAMPLE_SECONDS": "0.2"}
            service = ServiceUnderTest(name, env, tmp_path).start()
            started.callback(stops_cleanly, service)
            endpoints[name] = f"http://127.0.0.1:{port}/metrics"
            if name == "web":
                endpoints["web-http"] = service.base_url
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
    key = await client.command(
        "create_api_key",
        org_id=org_id,
        actor=OWNER,
        name="metrics",
        permissions=[*sorted(permissions_of("developer")), "members:invite"],
    )
    async with httpx.AsyncClient(
        base_url=stack["web-http"], headers={"Authorization": f"Bearer {key['result']['secret']}"}
    ) as http:
        for _ in range(3):
            assert (await http.get(f"/v1/orgs/{org_id}/members")).status_code == 200
        invited = await http.post(f"/v1/orgs/{org_id}/invitations", json={"email": "web@example.com", "role": "developer"})
        assert invited.status_code == 201, invited.text
        assert (await http.get(f"/v1/orgs/{org_id}/no-such-thing")).status_code == 404
        # A method HTTP knows but the edge does not serve (a made-up one never gets past httptools: 400).
        assert (await http.request("PROPFIND", "/healthz")).status_code == 405
    stream_last = (await nc.jetstream().stream_info("MEMBERSHIP")).state.last_seq
    assert stream_last >= INVITES + 2

    for name, url in ((name, url) for name, url in stack.items() if name in FAMILIES):
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

    web = await asyncio.to_thread(scrape, stack["web"])
    members = {"route": "/v1/orgs/{org_id}/members", "method": "GET", "status": "200"}
    assert value(web, "team_members_http_requests_total", **members) == 3
    assert value(web, "team_members_http_request_duration_seconds_count", **members) == 3
    assert value(web, "team_members_http_request_duration_seconds_bucket", **members, le="+Inf") == 3
    invitations = {"route": "/v1/orgs/{org_id}/invitations", "method": "POST", "status": "201"}
    assert value(web, "team_members_http_requests_total", **invitations) == 1
    assert value(web, "team_members_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert (
        value(web, "team_members_http_requests_total", route="unmatched", method="other", status="405")
        + value(web, "team_members_http_requests_total", route="/healthz", method="other", status="405")
        == 1
    )
    assert not [labels for (name, labels) in web if org_id in str(labels)], "a path, not its template, became a label"

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
    ports = [MetricsSettings.from_env(name, {}).port for name in ("membership", "billing", "audit", "notifier", "web")]
    assert len(set(ports)) == 5 and all(ports)
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
    for family in (
        "commands",
        "command latency",
        "authorize",
        "consumer lag",
        "dead letters",
        "relay lag",
        "deliveries",
        "http requests",
        "http latency",
    ):
        assert family in titles
