"""Latency and rate bookkeeping for benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
