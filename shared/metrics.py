"""Small in-process measurements a service reports in its queries."""

from __future__ import annotations

from collections import deque
from datetime import timedelta


class LagRecorder:
    """How long events took from being recorded to being projected, over the last few thousand.

    The window is sorted when asked about and only if it changed since: a status query (polled
    every half second by a benchmark or a dashboard) costs one sort of 10,000 lags at most, and
    none while no event comes."""

    def __init__(self, keep: int = 10_000) -> None:
        self._lags_ms: deque[float] = deque(maxlen=keep)
        self.count = 0
        self._sorted: list[float] = []
        self._sorted_at = 0  # the count the sorted copy was taken at

    def record(self, lag: timedelta) -> None:
        self.record_seconds([lag.total_seconds()])

    def record_seconds(self, lags: list[float]) -> None:
        self._lags_ms.extend(lag * 1000 for lag in lags)
        self.count += len(lags)

    def percentile(self, p: float) -> float | None:
        if not self._lags_ms:
            return None
        if self._sorted_at != self.count or len(self._sorted) != len(self._lags_ms):
            self._sorted, self._sorted_at = sorted(self._lags_ms), self.count
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    def summary(self) -> dict[str, float | int | None]:
        return {"events_applied": self.count, "lag_p50_ms": self.percentile(50), "lag_p99_ms": self.percentile(99)}

    def reset(self) -> None:
        self._lags_ms.clear()
        self.count = 0
        self._sorted, self._sorted_at = [], 0
