"""The processes a `make run` started, recorded under its var/ directory.

Whoever finds them later stops exactly those and nothing else: the guardian when the supervisor dies
without stopping them, or the next `make run` when even the guardian is gone. A process is identified
by its PID and its create time, so a PID the system has since given to another process is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import psutil

from devstack.process import still_alive_after

# Two processes never share a PID within this many seconds of their start.
SAME_START_TOLERANCE_SECONDS = 0.01


class RecordedProcess(msgspec.Struct, frozen=True):
    name: str
    pid: int
    create_time: float
    stop_signal: int
    stop_timeout: float
    # PostgreSQL: backends outliving a killed postmaster keep its shared memory, so kill them too.
    with_descendants: bool = False

    @classmethod
    def of(cls, name: str, pid: int, stop_signal: int, stop_timeout: float, with_descendants: bool = False) -> RecordedProcess:
        return cls(name, pid, psutil.Process(pid).create_time(), int(stop_signal), stop_timeout, with_descendants)

    def running(self) -> psutil.Process | None:
        """The process, while it is still the one recorded and has not exited."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > SAME_START_TOLERANCE_SECONDS:
                return None
            return None if process.status() == psutil.STATUS_ZOMBIE else process
        except psutil.NoSuchProcess:
            return None

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


class StackRecord(msgspec.Struct):
    supervisor: RecordedProcess
    guardian: RecordedProcess | None = None
    processes: list[RecordedProcess] = msgspec.field(default_factory=list)  # in the order they started


class StackFile:
    """var/stack.json: written whole and atomically on every change, so a reader never sees half of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> StackRecord | None:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=StackRecord)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError:
            return None  # not ours to interpret; the port checks still catch a stack left running

    def save(self, record: StackRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        partial.write_bytes(msgspec.json.encode(record))
        os.replace(partial, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def stop_recorded(process: RecordedProcess) -> None:
    """Ask it to stop the way it stops cleanly; kill it (and, if recorded so, its descendants) after its timeout."""
    running = process.running()
    if running is None:
        return
    try:
        descendants = running.children(recursive=True) if process.with_descendants else []
        running.send_signal(process.stop_signal)
    except psutil.NoSuchProcess:
        return
    if not still_alive_after([running], process.stop_timeout):
        still_alive_after(descendants, process.stop_timeout)
        return
    for leftover in [running, *descendants]:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    still_alive_after([running, *descendants], process.stop_timeout)


def stop_in_reverse_order(processes: Sequence[RecordedProcess], report: Callable[[str], None]) -> None:
    """The services before the servers they use, as the supervisor itself stops them."""
    for process in reversed(processes):
        if process.running() is not None:
            stop_recorded(process)
            report(f"stopped {process.describe()}")
