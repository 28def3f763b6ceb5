"""Interval daemons: `PeriodicDaemon` calls `tick()` every `interval_s`, optionally only on the leader.

    class Reaper(PeriodicDaemon):
        interval_s = 30.0
        leader_only = True                     # one process in the cluster reaps

        async def tick(self) -> None:
            ...

    manager.register_factory("REAPER", lambda: Reaper(leadership=leadership, clock=manager_clock))

The interval is measured from the start of one tick to the start of the next (a slow tick delays
the next, ticks never overlap). A tick that raises is logged and counted, and the loop goes on;
`health_check()` turns unhealthy when errors exceed `max_error_rate` of the ticks, and the manager
restarts the daemon. A `leader_only` daemon waits while this process is not the leader and ticks
again within one loop turn of becoming leader; a tick in progress when leadership is lost finishes.
Time comes from a `Clock` (coordination.daemon_clock), so tests drive it with a ManualClock.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable
from typing import ClassVar

from brokers.errors import ConfigurationError
from coordination.daemon_clock import Clock, SystemClock
from coordination.daemons.leader import LeaderState
from coordination.protocols import HealthCheckResult

__all__ = ["PeriodicDaemon"]

log = logging.getLogger(__name__)


class PeriodicDaemon(abc.ABC):
    interval_s: ClassVar[float] = 60.0
    leader_only: ClassVar[bool] = False
    max_error_rate: ClassVar[float] = 0.5

    def __init__(self, *, interval_s: float | None = None, leader_only: bool | None = None,
                 leadership: LeaderState | None = None, clock: Clock | None = None) -> None:
        self.interval = self.interval_s if interval_s is None else interval_s
        self.only_on_leader = self.leader_only if leader_only is None else leader_only
        if self.interval <= 0:
            raise ConfigurationError(f"{type(self).__name__}: interval_s must be > 0")
        if self.only_on_leader and leadership is None:
            raise ConfigurationError(f"{type(self).__name__} is leader_only: give it a leadership")
        self.leadership = leadership
        self.clock: Clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self.ticks = 0
        self.errors = 0
        self._started_at: float | None = None
        self._last_tick_at: float | None = None

    @abc.abstractmethod
    async def tick(self) -> None:
        """One round of work."""

    async def run(self) -> None:
        self._started_at = self.clock.monotonic()
        if self.leadership is not None and self.only_on_leader:
            await self.leadership.start()
        while not self._stop.is_set():
            if self.only_on_leader and self.leadership is not None and not self.leadership.is_leader:
                await self._until(self.leadership.wait(True))
                continue
            began = self.clock.monotonic()
            await self._tick_once()
            await self._until(self.clock.sleep(self.interval - (self.clock.monotonic() - began)))

    async def _tick_once(self) -> None:
        self.ticks += 1
        self._last_tick_at = self.clock.monotonic()
        try:
            await self.tick()
        except Exception:
            self.errors += 1
            log.exception("%s: tick failed", type(self).__name__)

    async def _until(self, waiting: Awaitable[None]) -> None:
        """Wait for `waiting` or stop(), whichever comes first."""
        waiter = asyncio.ensure_future(waiting)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()

    async def stop(self) -> None:
        self._stop.set()

    def health_check(self) -> HealthCheckResult:
        now = self.clock.monotonic()
        uptime = 0.0 if self._started_at is None else now - self._started_at
        details = {"ticks": self.ticks, "interval_s": self.interval, "leader_only": self.only_on_leader,
                   "is_leader": None if self.leadership is None else self.leadership.is_leader}
        last = None if self._last_tick_at is None else now - self._last_tick_at
        return HealthCheckResult.from_metrics(uptime, self.ticks, self.errors, last_activity_ago=last,
                                              max_inactivity_seconds=max(300.0, 3 * self.interval)
                                              if not self.only_on_leader else float("inf"),
                                              max_error_rate=self.max_error_rate, **details)
