"""Small in-process measurements a service reports in its queries."""

from __future__ import annotations

from collections import deque
from datetime import timedelta


class LagRecorder:
    """How long events took from being recorded to being projected, over the last few thousand."""

    def __init__(self, keep: int = 10_000) -> None:
        self._lags_ms: deque[float] = deque(maxlen=keep)
        self.count = 0

    def record(self, lag: timedelta) -> None:
        self._lags_ms.append(lag.total_seconds() * 1000)
        self.count += 1

    def percentile(self, p: float) -> float | None:
        if not self._lags_ms:
            return None
        ordered = sorted(self._lags_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    def summary(self) -> dict[str, float | int | None]:
        return {"events_applied": self.count, "lag_p50_ms": self.percentile(50), "lag_p99_ms": self.percentile(99)}

    def reset(self) -> None:
        self._lags_ms.clear()
        self.count = 0
