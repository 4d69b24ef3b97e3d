"""`make run`: NATS, PostgreSQL, the SMTP sink and every service, in the foreground.

Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops the services, then the servers. If this process
is killed outright, its guardian stops them; if the guardian is gone too, the next run finds them in
var/stack.json and stops them before it starts. Data stays under var/ for the next run.
NATS_URL, DATABASE_URL and SMTP_URL point at servers of your own instead; PUBLIC_URL is passed on.
The server secret is SERVER_SECRET from the environment, or one generated once into var/server-secret.
Each service serves Prometheus metrics on its default port (9101..9105), or a free one when that is
taken; the endpoints are printed at start. METRICS_PORT=0 turns them off.
The HTTP edge (services/web) listens on 127.0.0.1:8080 (--web-port, or WEB_PORT); a run refuses to
start when that port is taken. Without PUBLIC_URL, links use http://localhost:<that port>. Once every service answers health, READY is printed with its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from devstack.demo_sign_in import offer_demo_sign_in
from devstack.health import report_readiness
from devstack.nats_server import NatsServer
from devstack.ports import LOOPBACK, free_port, port_is_free
from devstack.postgres_server import PostgresServer
from devstack.process import ServerStartError
from devstack.server_secret import secret_for_services
from devstack.service_process import ServiceProcess, console
from devstack.smtp_sink_server import IMPORT_ROOT, SmtpSink
from devstack.stack_record import (
    RecordedProcess,
    StackFile,
    StackRecord,
    stop_in_reverse_order,
    stop_recorded,
)
from shared.telemetry import DEFAULT_HOST, DEFAULT_PORTS
from shared.topology import EDGE_SERVICE, SERVICES

DATABASE = "team_members"
NATS_PORT = 4222
POSTGRES_PORTS = (5432, 54329)
SMTP_PORT = 2525
WEB_PORT = 8080


def default_public_url(web_port: int) -> str:
    """Without PUBLIC_URL, links point at this stack's own edge, named `localhost` as its announced URL is."""
    return f"http://localhost:{web_port}"


EXTERNAL_URLS = ("NATS_URL", "DATABASE_URL", "SMTP_URL")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SERVICE_STOP_TIMEOUT = 10.0

Server = NatsServer | PostgresServer | SmtpSink
S = TypeVar("S", NatsServer, PostgresServer, SmtpSink)


@dataclass(frozen=True)
class RunOptions:
    """Where the run keeps its data and which ports its servers take; tests run a stack of their own."""

    var_dir: Path
    nats_port: int = NATS_PORT
    postgres_ports: tuple[int, ...] = POSTGRES_PORTS
    smtp_port: int = SMTP_PORT
    web_port: int = WEB_PORT


class StackWatch:
    """Records what this run starts under var/, and keeps a guardian that stops it if this process dies."""

    def __init__(self, var_dir: Path) -> None:
        self.stack_file = StackFile(var_dir / "stack.json")
        self._guardian_log = var_dir / "guardian.log"
        self._record: StackRecord | None = None
        self._guardian: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # the pipe's write end; only this process holds it
        self._lock = threading.Lock()  # servers are recorded from a worker thread

    def stop_stale_stack(self) -> None:
        """Stop what an earlier run recorded and left running; refuse if that run is still going."""
        earlier = self.stack_file.load()
        if earlier is None:
            return
        if earlier.supervisor.running() is not None:
            raise ServerStartError(
                f"another `make run` ({earlier.supervisor.describe()}) is running on {self.stack_file.path.parent}"
            )
        guardian = [earlier.guardian] if earlier.guardian else []
        left_running = [process for process in [*guardian, *earlier.processes] if process.running() is not None]
        if left_running:
            console(
                "run",
                f"an earlier run (pid {earlier.supervisor.pid}) left a stack running: "
                f"{', '.join(process.describe() for process in left_running)}; stopping it first",
            )
            for process in guardian:  # first, so it does not stop the same processes alongside us
                stop_recorded(process)
            stop_in_reverse_order(earlier.processes, lambda text: console("run", text))
        self.stack_file.remove()

    def start_guardian(self) -> None:
        watched_end, self._lifeline = os.pipe()
        self._guardian_log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self._guardian_log, "ab") as log:
                self._guardian = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "devstack.guardian",
                        "--watch-fd",
                        str(watched_end),
                        "--record",
                        str(self.stack_file.path.resolve()),
                    ],
                    pass_fds=(watched_end,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=IMPORT_ROOT,
                    start_new_session=True,  # the terminal's signals are not for it
                )
        finally:
            os.close(watched_end)
        self._record = StackRecord(
            supervisor=RecordedProcess.of("make run", os.getpid(), signal.SIGTERM, SERVICE_STOP_TIMEOUT),
            guardian=RecordedProcess.of("guardian", self._guardian.pid, signal.SIGTERM, SERVICE_STOP_TIMEOUT),
        )
        self.stack_file.save(self._record)

    def add(self, process: RecordedProcess) -> None:
        with self._lock:
            assert self._record is not None
            self._record.processes.append(process)
            self.stack_file.save(self._record)

    def close(self) -> None:
        """After a clean stop: nothing left to record, and the guardian, seeing end-of-file, just exits."""
        if self._record is not None:
            self.stack_file.remove()
        if self._lifeline is not None:
            os.close(self._lifeline)
        if self._guardian is not None:
            try:
                self._guardian.wait(SERVICE_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._guardian.kill()
                self._guardian.wait()


def recorded_server(server: Server) -> RecordedProcess:
    assert server.pid is not None
    return RecordedProcess.of(
        server.name, server.pid, server.STOP_SIGNAL, server.STOP_TIMEOUT, with_descendants=server.kills_descendants
    )


def recorded_service(service: ServiceProcess) -> RecordedProcess:
    assert service.pid is not None
    return RecordedProcess.of(service.name, service.pid, signal.SIGTERM, SERVICE_STOP_TIMEOUT)


class LocalServers:
    """The servers this run starts itself: those whose URL the environment does not give."""

    def __init__(
        self, options: RunOptions, environment: dict[str, str], on_launch: Callable[[Server], None] = lambda _: None
    ) -> None:
        self.options = options
        self.var_dir = options.var_dir
        self.environment = environment
        self.on_launch = on_launch
        self.started: list[Server] = []

    def start(self) -> dict[str, str]:
        """Start what is needed; return NATS_URL, DATABASE_URL, SMTP_URL for the services."""
        urls = {name: self.environment[name] for name in EXTERNAL_URLS if name in self.environment}
        if "NATS_URL" not in urls:
            port = _required_free_port(self.options.nats_port, "NATS_URL")
            nats = self._start(NatsServer(self.var_dir / "nats", port))
            urls["NATS_URL"] = nats.url
        if "DATABASE_URL" not in urls:
            postgres = self._start(PostgresServer(self.var_dir / "pg", _postgres_port(self.options.postgres_ports)))
            postgres.create_database(DATABASE)
            urls["DATABASE_URL"] = postgres.dsn(DATABASE)
        if "SMTP_URL" not in urls:
            port = _required_free_port(self.options.smtp_port, "SMTP_URL")
            smtp = self._start(SmtpSink(self.var_dir / "mail", port))
            urls["SMTP_URL"] = smtp.url
        for name in EXTERNAL_URLS:
            url = urls[name]
            origin = "from the environment" if name in self.environment else "started here"
            console("run", f"{name}={url} ({origin})")
        return urls

    def stop(self) -> None:
        while self.started:
            server = self.started.pop()
            server.stop()
            console("run", f"stopped {type(server).__name__}")

    def _start(self, server: S) -> S:
        self.started.append(server)  # before start: a server that fails to get ready is stopped too
        server.launch()
        self.on_launch(server)  # recorded at once: it may take a while to get ready
        console("run", f"{type(server).__name__} pid {server.pid}, log {server.log_path}")
        server.wait_until_ready()
        return server


def _required_free_port(port: int, variable: str) -> int:
    if not port_is_free(port):
        raise ServerStartError(f"127.0.0.1:{port} is in use (another `make run`?); or set {variable}")
    return port


def _postgres_port(candidates: tuple[int, ...]) -> int:
    for port in candidates:
        if port_is_free(port):
            return port
    raise ServerStartError(f"ports {candidates} are in use; set DATABASE_URL")


def services_present(root: Path) -> list[str]:
    return [name for name in SERVICES if (root / "services" / name / "__main__.py").exists()]


def service_environment(urls: dict[str, str], secret: dict[str, str], web_port: int = WEB_PORT) -> dict[str, str]:
    return {
        **os.environ,
        **urls,
        **secret,
        "PUBLIC_URL": os.environ.get("PUBLIC_URL") or default_public_url(web_port),
        "WEB_PORT": str(web_port),
        "PYTHONUNBUFFERED": "1",
    }


@dataclass(frozen=True)
class EdgeAddress:
    """Where the edge listens, and the URL its links use (PUBLIC_URL: a proxy's, or this one)."""

    host: str
    port: int
    public_url: str

    @classmethod
    def of(cls, options: RunOptions, environment: dict[str, str]) -> EdgeAddress:
        public_url = environment.get("PUBLIC_URL") or default_public_url(options.web_port)
        return cls(environment.get("WEB_HOST", LOOPBACK), options.web_port, public_url)

    @property
    def url(self) -> str:
        """As a browser should open it: on loopback, `localhost`, the host of the default PUBLIC_URL,
        since a cookie set for one host name is not sent to the other."""
        host = "localhost" if self.host == LOOPBACK else self.host
        return f"http://{host}:{self.port}"

    def require_free(self) -> None:
        if not port_is_free(self.port, self.host):
            raise ServerStartError(
                f"{self.host}:{self.port} is in use (another `make run`?); the edge needs it: "
                f"stop what listens there, or choose another port with --web-port or WEB_PORT"
            )

    def announce(self) -> None:
        console("run", f"the edge (HTTP API and pages): {self.url}  PUBLIC_URL={self.public_url}")


def metrics_ports(names: list[str], environment: dict[str, str]) -> dict[str, int]:
    """Each service's metrics port: its default, or a free one when that is taken; all 0 with METRICS_PORT=0."""
    if environment.get("METRICS_PORT") == "0":
        return dict.fromkeys(names, 0)
    host = environment.get("METRICS_HOST", DEFAULT_HOST)
    ports = {}
    for name in names:
        default = DEFAULT_PORTS.get(name, 0)
        ports[name] = default if default and port_is_free(default, host) else free_port(host)
    return ports


def print_metrics_endpoints(ports: dict[str, int], host: str) -> None:
    for name, port in ports.items():
        shown = f"http://{host}:{port}/metrics" if port else "off (METRICS_PORT=0)"
        console("run", f"metrics of {name}: {shown}")


async def supervise(root: Path, options: RunOptions) -> int:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_requested.set)

    watch = StackWatch(options.var_dir)
    servers = LocalServers(options, dict(os.environ), on_launch=lambda server: watch.add(recorded_server(server)))
    services: list[ServiceProcess] = []
    try:
        await asyncio.to_thread(watch.stop_stale_stack)
        present = services_present(root)
        edge = EdgeAddress.of(options, dict(os.environ)) if EDGE_SERVICE in present else None
        if edge is not None:
            edge.require_free()  # before any server starts: nothing to stop when it is taken
        watch.start_guardian()
        secret, where_from = secret_for_services(options.var_dir, dict(os.environ))
        console("run", where_from)
        urls = await asyncio.to_thread(servers.start)
        if stop_requested.is_set():
            return 0
        environment = service_environment(urls, secret, options.web_port)
        ports = metrics_ports(present, environment)
        print_metrics_endpoints(ports, environment.get("METRICS_HOST", DEFAULT_HOST))
        services = [ServiceProcess(name, {**environment, "METRICS_PORT": str(port)}, root) for name, port in ports.items()]
        for service in services:
            await service.start()
            watch.add(recorded_service(service))
        return await run_until_stopped(services, stop_requested, urls["NATS_URL"], edge, environment)
    except ServerStartError as error:
        console("run", f"could not start: {error}")
        return 1
    finally:
        for service in reversed(services):
            await service.stop()
        await asyncio.to_thread(servers.stop)
        watch.close()
        console("run", "stopped")


async def run_until_stopped(
    services: list[ServiceProcess],
    stop_requested: asyncio.Event,
    nats_url: str,
    edge: EdgeAddress | None = None,
    environment: dict[str, str] | None = None,
) -> int:
    """Until a stop is requested (exit 0) or a service exits on its own (exit 1)."""

    async def ready() -> None:
        if await report_readiness(nats_url, [s.name for s in services]) and edge is not None:
            edge.announce()
            await offer_demo_sign_in(nats_url, environment or dict(os.environ))

    if services:
        readiness = asyncio.create_task(ready())
    else:
        readiness = None
        console("run", f"no services/<name>/__main__.py yet ({', '.join(SERVICES)}): running the servers only")
    exits = {asyncio.create_task(service.wait()): service for service in services}
    stop = asyncio.create_task(stop_requested.wait())
    done, pending = await asyncio.wait([stop, *exits], return_when=asyncio.FIRST_COMPLETED)
    for task in [*pending, *([readiness] if readiness else [])]:
        task.cancel()
    crashed = [(exits[task], task.result()) for task in done if task in exits]
    for service, exit_code in crashed:
        console("run", f"{service.name} exited unexpectedly with code {exit_code}; shutting down")
    if not crashed:
        console("run", "stop requested; shutting down")
    return 1 if crashed else 0


def parse_options(argv: list[str] | None = None) -> RunOptions:
    parser = argparse.ArgumentParser(description="NATS, PostgreSQL, the SMTP sink and every service, in the foreground")
    parser.add_argument("--var-dir", type=Path, default=Path("var"), help="data, logs, secret and stack record (var)")
    parser.add_argument("--nats-port", type=int, default=NATS_PORT)
    parser.add_argument("--postgres-port", type=int, action="append", help=f"tried in order (default {POSTGRES_PORTS})")
    parser.add_argument("--smtp-port", type=int, default=SMTP_PORT)
    parser.add_argument(
        "--web-port", type=int, default=_web_port_from_environment(), help=f"the edge's HTTP port (WEB_PORT, else {WEB_PORT})"
    )
    arguments = parser.parse_args(argv)
    return RunOptions(
        var_dir=arguments.var_dir.resolve(),
        nats_port=arguments.nats_port,
        postgres_ports=tuple(arguments.postgres_port or POSTGRES_PORTS),
        smtp_port=arguments.smtp_port,
        web_port=arguments.web_port,
    )


def _web_port_from_environment() -> int:
    given = os.environ.get("WEB_PORT", "")
    return int(given) if given.isdigit() else WEB_PORT


def main() -> None:
    sys.exit(asyncio.run(supervise(Path.cwd(), parse_options())))


if __name__ == "__main__":
    main()
