"""Measuring inside a child process: timed windows, the process's own CPU time, summaries.

CPU time is the process's own accounting (`getrusage(RUSAGE_SELF)`: user + system, every thread),
read at the start and end of the timed window, so start-up, connection and warm-up are not counted.
"""

from __future__ import annotations

import asyncio
import math
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Meter", "Sample", "Summary", "cpu_s", "percentiles"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Sample:
    """One timed window: `events` done in `wall_s` seconds, costing `cpu_s` of this process."""

    events: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s / self.events * 100_000 if self.events else 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Meter:
    """Counts handled events. The first `warmup_s` seconds after the first event are untimed; then
    a window of at most `window_s` seconds, or until `total` events, whichever ends first (a total
    reached during the warm-up closes a window opened at the first event). `done` is set when the
    window closes."""

    def __init__(self, warmup_s: float, window_s: float, total: int | None = None) -> None:
        self.warmup_s = warmup_s
        self.window_s = window_s
        self.total = total
        self.count = 0
        self.done = asyncio.Event()
        self.sample: Sample | None = None
        self._first: float | None = None
        self._t0 = self._cpu0 = 0.0
        self._c0 = 0
        self._timing = False

    def tick(self, n: int = 1) -> None:
        self.count += n
        if self.sample is not None:
            return
        now = time.perf_counter()
        if self._first is None:  # a window from here if the total comes before the warm-up ends
            self._first, self._t0, self._cpu0, self._c0 = now, now, cpu_s(), self.count
        if not self._timing and now - self._first >= self.warmup_s:
            self._timing, self._t0, self._cpu0, self._c0 = True, now, cpu_s(), self.count
        if (self._timing and now - self._t0 >= self.window_s) or (self.total is not None and self.count >= self.total):
            self.sample = Sample(self.count - self._c0, now - self._t0, cpu_s() - self._cpu0)
            self.done.set()

    async def wait(self, timeout_s: float) -> Sample:
        """The window's sample; raises TimeoutError naming how far it got."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"only {self.count} events handled in {timeout_s:g} s") from None
        assert self.sample is not None
        return self.sample


@dataclass(frozen=True)
class Summary:
    """Median and range of one figure over the repetitions."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(latencies_ms: Sequence[float], points: Sequence[float] = (50, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles, e.g. {"p50": .., "p99": .., "p99.9": ..}."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return {}
    out = {}
    for p in points:
        rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
        out[f"p{p:g}"] = ordered[rank - 1]
    return out
