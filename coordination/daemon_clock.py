"""Time for the daemon manager: the system clock, and a manual clock for tests.

The manager reads the time and sleeps only through a `Clock`, so restart back-off, crash-loop
windows, cooldowns, health intervals and dependency waits can be tested without waiting:

    clock = ManualClock()
    manager = DaemonManager(config, clock=clock)
    ...
    await clock.advance(5.0)     # wakes every sleeper due within the next 5 s, in order

`time()` is wall-clock Unix seconds (persisted restart timestamps, event payloads); `monotonic()`
measures intervals. Timeouts on operations (a health check, a stop) stay in real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.time`, `time.monotonic`, `asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to (`advance`). `sleep()` parks the caller until the
    clock has been advanced past its deadline; `sleep(0)` just yields."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._offset = time.monotonic() - self._now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now + self._offset

    @property
    def sleepers(self) -> int:
        """How many callers are parked in `sleep()` (cancelled ones excluded)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    async def advance(self, seconds: float, *, settle_rounds: int = 50) -> None:
        """Move the clock forward by `seconds`, waking sleepers in deadline order and letting the
        woken tasks run (`settle_rounds` loop iterations) before moving on."""
        target = self._now + seconds
        await self.settle(settle_rounds)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await self.settle(settle_rounds)
        self._now = target
        await self.settle(settle_rounds)

    @staticmethod
    async def settle(rounds: int = 50) -> None:
        """Let ready tasks run for `rounds` loop iterations."""
        for _ in range(rounds):
            await asyncio.sleep(0)
