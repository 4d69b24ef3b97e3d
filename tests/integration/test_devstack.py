"""The local servers start, keep their data through a crash, and leave nothing behind."""

import email
import email.policy
import socket
from email.message import EmailMessage

import aiosmtplib
import nats
import psutil
import psycopg
import pytest
from nats.js.api import StreamConfig

from devstack import NatsServer, PostgresServer, SmtpSink, free_port, nats_cluster
from devstack.process import pid_is_alive
from shared.bus import ensure_stream
from tests.servers import (
    nats_server_in_scratch_dir,
    postgres_server_in_scratch_dir,
    scratch_dir,
    smtp_sink_in_scratch_dir,
)

pytestmark = pytest.mark.integration


async def publish_to_new_stream(url: str, stream: str, messages: list[bytes], replicas: int = 1) -> None:
    connection = await nats.connect(url)
    try:
        jetstream = connection.jetstream()
        # as the services do: a cluster that has just started refuses while it places its first stream
        await ensure_stream(jetstream, StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"], num_replicas=replicas))
        for message in messages:
            await jetstream.publish(f"{stream.lower()}.event", message)
    finally:
        await connection.close()


async def read_stream(url: str, stream: str) -> list[bytes]:
    connection = await nats.connect(url)
    try:
        jetstream = connection.jetstream()
        last_sequence = (await jetstream.stream_info(stream)).state.last_seq
        return [(await jetstream.get_msg(stream, sequence)).data or b"" for sequence in range(1, last_sequence + 1)]
    finally:
        await connection.close()


async def test_jetstream_stores_and_returns_messages(nats_url: str) -> None:
    await publish_to_new_stream(nats_url, "ROUNDTRIP", [b"one", b"two"])

    assert await read_stream(nats_url, "ROUNDTRIP") == [b"one", b"two"]


async def test_nats_killed_and_restarted_on_same_dir_keeps_stream_messages() -> None:
    with nats_server_in_scratch_dir() as server:
        await publish_to_new_stream(server.url, "DURABLE", [b"a", b"b", b"c"])
        crashed_pid = server.pid

        server.kill()
        assert crashed_pid is not None and not pid_is_alive(crashed_pid)
        server.start()

        assert server.pid != crashed_pid
        assert await read_stream(server.url, "DURABLE") == [b"a", b"b", b"c"]


async def test_three_node_nats_cluster_serves_a_replicated_stream() -> None:
    with scratch_dir("nats-cluster") as path:
        servers = nats_cluster(path, size=3)
        try:
            for server in servers:
                server.launch()
            for server in servers:
                server.wait_until_ready()
            await publish_to_new_stream(servers[0].url, "REPLICATED", [b"x"], replicas=3)

            assert await read_stream(servers[2].url, "REPLICATED") == [b"x"]
        finally:
            for server in servers:
                server.stop()


def test_create_database_is_idempotent(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("created_twice")
    postgres_server.create_database("created_twice")

    with psycopg.connect(postgres_server.dsn("created_twice")) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("created_twice",)


def test_postgres_runs_with_its_settings_and_stays_durable(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn()) as connection:

        def setting(name: str) -> str:
            row = connection.execute("SELECT current_setting(%s)", (name,)).fetchone()
            assert row is not None
            return str(row[0])

        assert setting("autovacuum") == "on"
        assert setting("autovacuum_naptime") == "10s"
        # What the speed settings must never touch: a commit is on disk when it is acknowledged.
        assert [setting(name) for name in ("fsync", "synchronous_commit", "full_page_writes")] == ["on", "on", "on"]


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_a_fresh_database(database_url: str, attempt: int) -> None:
    with psycopg.connect(database_url) as connection:
        # Would fail on the second attempt if the database were shared.
        connection.execute("CREATE TABLE only_once (id int)")


def test_postgres_killed_and_restarted_keeps_committed_row() -> None:
    with postgres_server_in_scratch_dir() as server:
        server.create_database("crash")
        with psycopg.connect(server.dsn("crash"), autocommit=True) as connection:
            connection.execute("CREATE TABLE ledger (entry text)")
            connection.execute("INSERT INTO ledger VALUES ('committed')")
        postmaster = psutil.Process(server.pid)
        backends = postmaster.children(recursive=True)
        assert backends, "a running postmaster has background processes"

        server.kill()
        assert not any(pid_is_alive(process.pid) for process in [postmaster, *backends])
        server.start()

        with psycopg.connect(server.dsn("crash")) as connection:
            assert connection.execute("SELECT entry FROM ledger").fetchall() == [("committed",)]


async def test_smtp_sink_writes_each_message_as_eml_file(smtp_sink: SmtpSink) -> None:
    before = set(smtp_sink.messages())
    message = EmailMessage()
    message["From"] = "billing@example.com"
    message["To"] = "ada@example.com"
    message["Subject"] = "You are invited"
    message.set_content("Join the team.")

    await aiosmtplib.send(message, hostname=smtp_sink.host, port=smtp_sink.port)

    [written] = set(smtp_sink.messages()) - before
    received = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert received["Subject"] == "You are invited"
    assert received["X-RcptTo"] == "ada@example.com"
    assert received.get_content().strip() == "Join the team."


def test_nats_stop_leaves_no_process() -> None:
    with nats_server_in_scratch_dir() as server:
        pid = server.pid
        server.stop()
        server.stop()
        assert pid is not None and not pid_is_alive(pid)


def test_postgres_stop_leaves_no_process() -> None:
    with postgres_server_in_scratch_dir() as server:
        postmaster = psutil.Process(server.pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        server.stop()
        server.stop()
        assert not any(pid_is_alive(process.pid) for process in processes)


def test_smtp_sink_stop_leaves_no_process() -> None:
    with smtp_sink_in_scratch_dir() as server:
        pid = server.pid
        server.stop()
        server.stop()
        assert pid is not None and not pid_is_alive(pid)


def test_servers_bind_to_loopback_only(nats_server: NatsServer, postgres_server: PostgresServer) -> None:
    listening = {
        (connection.laddr.ip, connection.laddr.port)
        for pid in (nats_server.pid, postgres_server.pid)
        for connection in psutil.Process(pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }

    assert ("127.0.0.1", nats_server.port) in listening
    assert ("127.0.0.1", postgres_server.port) in listening
    assert all(ip == "127.0.0.1" for ip, _ in listening)


def test_free_port_returns_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
