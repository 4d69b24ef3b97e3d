"""`make run`: NATS, PostgreSQL, the SMTP sink and every service, in the foreground.

Ctrl-C or SIGTERM stops the services, then the servers. Data stays under var/ for the next run.
NATS_URL, DATABASE_URL and SMTP_URL point at servers of your own instead; PUBLIC_URL is passed on.
"""

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TypeVar

from shared.localstack.health import report_readiness
from shared.localstack.nats_server import NatsServer
from shared.localstack.ports import port_is_free
from shared.localstack.postgres_server import PostgresServer
from shared.localstack.process import ServerStartError
from shared.localstack.service_process import ServiceProcess, console
from shared.localstack.smtp_sink_server import SmtpSink

SERVICES = ("membership", "billing", "audit", "notifier")
DATABASE = "team_members"
NATS_PORT = 4222
POSTGRES_PORTS = (5432, 54329)
SMTP_PORT = 2525
DEFAULT_PUBLIC_URL = "http://localhost:8080"
EXTERNAL_URLS = ("NATS_URL", "DATABASE_URL", "SMTP_URL")

Server = NatsServer | PostgresServer | SmtpSink
S = TypeVar("S", NatsServer, PostgresServer, SmtpSink)


class LocalServers:
    """The servers this run starts itself: those whose URL the environment does not give."""

    def __init__(self, var_dir: Path, environment: dict[str, str]) -> None:
        self.var_dir = var_dir
        self.environment = environment
        self.started: list[Server] = []

    def start(self) -> dict[str, str]:
        """Start what is needed; return NATS_URL, DATABASE_URL, SMTP_URL for the services."""
        urls = {name: self.environment[name] for name in EXTERNAL_URLS if name in self.environment}
        if "NATS_URL" not in urls:
            nats = self._start(NatsServer(self.var_dir / "nats", _required_free_port(NATS_PORT, "NATS_URL")))
            urls["NATS_URL"] = nats.url
        if "DATABASE_URL" not in urls:
            postgres = self._start(PostgresServer(self.var_dir / "pg", _postgres_port()))
            postgres.create_database(DATABASE)
            urls["DATABASE_URL"] = postgres.dsn(DATABASE)
        if "SMTP_URL" not in urls:
            smtp = self._start(SmtpSink(self.var_dir / "mail", _required_free_port(SMTP_PORT, "SMTP_URL")))
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
        server.start()
        console("run", f"{type(server).__name__} pid {server.pid}, log {server.log_path}")
        return server


def _required_free_port(port: int, variable: str) -> int:
    if not port_is_free(port):
        raise ServerStartError(f"127.0.0.1:{port} is in use (another `make run`?); or set {variable}")
    return port


def _postgres_port() -> int:
    for port in POSTGRES_PORTS:
        if port_is_free(port):
            return port
    raise ServerStartError(f"ports {POSTGRES_PORTS} are in use; set DATABASE_URL")


def services_present(root: Path) -> list[str]:
    return [name for name in SERVICES if (root / "services" / name / "__main__.py").exists()]


def service_environment(urls: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **urls,
        "PUBLIC_URL": os.environ.get("PUBLIC_URL", DEFAULT_PUBLIC_URL),
        "PYTHONUNBUFFERED": "1",
    }


async def supervise(root: Path) -> int:
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)

    servers = LocalServers(root / "var", dict(os.environ))
    services: list[ServiceProcess] = []
    try:
        urls = await asyncio.to_thread(servers.start)
        if stop_requested.is_set():
            return 0
        environment = service_environment(urls)
        services = [ServiceProcess(name, environment, root) for name in services_present(root)]
        for service in services:
            await service.start()
        return await run_until_stopped(services, stop_requested, urls["NATS_URL"])
    except ServerStartError as error:
        console("run", f"could not start: {error}")
        return 1
    finally:
        for service in reversed(services):
            await service.stop()
        await asyncio.to_thread(servers.stop)
        console("run", "stopped")


async def run_until_stopped(services: list[ServiceProcess], stop_requested: asyncio.Event, nats_url: str) -> int:
    """Until a stop is requested (exit 0) or a service exits on its own (exit 1)."""
    if services:
        readiness = asyncio.create_task(report_readiness(nats_url, [s.name for s in services]))
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


def main() -> None:
    sys.exit(asyncio.run(supervise(Path.cwd())))


if __name__ == "__main__":
    main()
