"""A child process we own by PID, with its output in a log file."""

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    pass


class ChildProcess:
    def __init__(self, name: str, log_path: Path, kill_descendants: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self.kill_descendants = kill_descendants
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def launch(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log_file.flush()
            # A session of its own: a Ctrl-C in the terminal reaches only the supervisor,
            # which then stops the children in order.
            self._popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                user=user,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        log.info("%s started, pid %s", self.name, self._popen.pid)

    def stop(self, stop_signal: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Ask the process to stop; SIGKILL it if it has not exited within timeout. Idempotent."""
        if not self.is_running():
            self._reap()
            return
        assert self._popen is not None
        self._popen.send_signal(stop_signal)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs, killing it", self.name, timeout)
            self.kill()
        log.info("%s stopped", self.name)

    def kill(self) -> None:
        if self.is_running():
            assert self._popen is not None
            if self.kill_descendants:
                kill_process_tree(self._popen.pid)
            else:
                self._popen.kill()
        self._reap()

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_until_ready(self, is_ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll is_ready until it holds; fail fast, with the log's tail, if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise ServerStartError(
                    f"{self.name} exited with code {self.exit_code()} before {what}; log {self.log_path}:\n{self.log_tail()}"
                )
            if is_ready():
                return
            time.sleep(0.05)
        raise ServerStartError(
            f"{self.name} (pid {self.pid}) not {what} after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
        )

    def _reap(self) -> None:
        if self._popen is not None:
            self._popen.wait()


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, and wait until they are gone.

    The parent is frozen first so it cannot fork a new child between listing and killing;
    its children are listed before it dies because afterwards they are reparented.
    """
    try:
        parent = psutil.Process(pid)
        parent.send_signal(signal.SIGSTOP)
        descendants = parent.children(recursive=True)
        parent.kill()
    except psutil.NoSuchProcess:
        return
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until_gone([parent, *descendants])


def wait_until_gone(processes: Sequence[psutil.Process], timeout: float = 10.0) -> None:
    remaining = still_alive_after(processes, timeout)
    if remaining:
        raise RuntimeError(f"processes still alive after SIGKILL: {[p.pid for p in remaining]}")


def still_alive_after(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Polls until every process is gone or `timeout` has passed; returns those still alive.

    Works for processes that are not our children too (psutil's wait would wait for a zombie's reaping).
    """
    deadline = time.monotonic() + timeout
    remaining = [p for p in processes if _is_alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.02)
        remaining = [p for p in remaining if _is_alive(p)]
    return remaining


def _is_alive(process: psutil.Process) -> bool:
    # A zombie holds no memory or ports; reaping it is its new parent's business.
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pid_is_alive(pid: int) -> bool:
    try:
        return _is_alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


class OwnsAChildProcess:
    """The PID, log and liveness of a server run as a ChildProcess in `self._process`."""

    _process: ChildProcess
    # How the server is asked to stop cleanly, and how long it gets before it is killed.
    STOP_SIGNAL: signal.Signals = signal.SIGTERM
    STOP_TIMEOUT: float = 15.0

    @property
    def name(self) -> str:
        return self._process.name

    @property
    def kills_descendants(self) -> bool:
        return self._process.kill_descendants

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def is_running(self) -> bool:
        return self._process.is_running()
