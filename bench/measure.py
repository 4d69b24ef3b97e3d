"""Latency and rate bookkeeping for benchmarks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

from tests.services_under_test import ServiceUnderTest


@dataclass
class Latencies:
    samples_ms: list[float] = field(default_factory=list)

    def record(self, started: float) -> None:
        self.samples_ms.append((time.perf_counter() - started) * 1000)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    note: str = ""

    def line(self) -> str:
        digits = 3 if self.unit == "x" else 1  # a ratio is read to the thousandth
        return f"  {self.name:<52} {self.value:>12,.{digits}f} {self.unit:<10} {self.note}"


@dataclass
class ProcessCpu:
    """CPU seconds (user + system) a process spent while a benchmark ran: a figure the machine's
    other load moves far less than a rate does."""

    process: psutil.Process
    service: str = "membership"
    started: float = 0.0
    spent: float = 0.0

    def figure(self, commands: int, command: str = "invite_member") -> Figure:
        return Figure(f"  {self.service} CPU per {command}", 1e6 * self.spent / commands, "µs", "(user + system)")

    def seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system


@contextmanager
def cpu_per_command(service: ServiceUnderTest) -> Iterator[ProcessCpu]:
    with cpu_of_each([service]) as (cpu,):
        yield cpu


@contextmanager
def cpu_of_each(services: list[ServiceUnderTest]) -> Iterator[list[ProcessCpu]]:
    """The CPU each service's process spends while the block runs, one `ProcessCpu` per service."""
    cpus = []
    for service in services:
        assert service.popen is not None
        cpus.append(ProcessCpu(psutil.Process(service.popen.pid), service.name))
    for cpu in cpus:
        cpu.started = cpu.seconds()
    yield cpus
    for cpu in cpus:
        cpu.spent = cpu.seconds() - cpu.started
