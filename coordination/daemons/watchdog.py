"""DAEMON_WATCHDOG: restarts daemons whose task is alive but that stopped making progress.

Progress contract: a daemon opts in by exposing `last_progress` on its instance (an attribute or a
property): the manager clock's `time()` (Unix seconds) of its last unit of work, which the daemon
updates itself (per handled event, per loop iteration). A daemon without `last_progress` is not
watched (the watchdog cannot tell idle from stuck). A running daemon is stuck when
`now - max(last_progress, start of its instance) > stuck_after` (strict >; default 300 s, or the
instance's own `stuck_after` attribute).

A stuck daemon is restarted at most 3 times per rolling hour and never sooner than 60 s after its
previous watchdog restart (the original's numbers); past that it is left alone and reported in the
watchdog's health details (`blocked`). The manager has no public restart call, so a restart is
`manager.stop(t)` (graceful, then cancelled) followed by `manager.start(t, wait_for_deps=False)`;
the manager's own restart budget (max_restarts, permanent failure) is not charged for it.
Time comes from the manager's clock, so tests drive the watchdog with a `ManualClock`.

Registration:

    manager.register_factory(DaemonType.DAEMON_WATCHDOG, watchdog.factory(manager),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from coordination.daemon_clock import Clock, SystemClock
from coordination.daemon_types import DaemonKey, DaemonType
from coordination.protocols import HealthCheckResult

__all__ = ["CHECK_INTERVAL", "MAX_RESTARTS_PER_HOUR", "RESTART_SPACING", "STUCK_AFTER", "DaemonWatchdog",
           "clock_pause", "factory", "manager_clock"]

log = logging.getLogger(__name__)

CHECK_INTERVAL = 30.0
STUCK_AFTER = 300.0
MAX_RESTARTS_PER_HOUR = 3
RESTART_SPACING = 60.0
_HOUR = 3600.0


def manager_clock(manager: Any) -> Clock:
    """The manager's clock (a SystemClock for a manager-like object without one)."""
    clock = getattr(manager, "clock", None)
    return clock if clock is not None else SystemClock()


class DaemonWatchdog:
    """Checks every `check_interval` s of clock time; see the module docstring."""

    def __init__(self, manager: Any, *, clock: Clock | None = None, check_interval: float = CHECK_INTERVAL,
                 stuck_after: float = STUCK_AFTER, max_restarts_per_hour: int = MAX_RESTARTS_PER_HOUR,
                 restart_spacing: float = RESTART_SPACING,
                 self_type: DaemonKey = DaemonType.DAEMON_WATCHDOG) -> None:
        self._manager = manager
        self._clock = clock or manager_clock(manager)
        self.check_interval = check_interval
        self.stuck_after = stuck_after
        self.max_restarts_per_hour = max_restarts_per_hour
        self.restart_spacing = restart_spacing
        self._self_type = self_type
        self._restarts: dict[DaemonKey, deque[float]] = {}
        self._stopped = asyncio.Event()
        self.last_progress = self._clock.time()
        self.passes = 0
        self.restarts_total = 0
        self.stuck: dict[str, float] = {}  # daemon name -> seconds without progress, last pass
        self.blocked: dict[str, str] = {}  # daemon name -> why it was not restarted

    # -- the daemon contract ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._stopped.clear()
        while not self._stopped.is_set():
            try:
                await self.check_once()
            except Exception:
                log.exception("watchdog pass failed; the watchdog goes on")
            await clock_pause(self._clock, self.check_interval, self._stopped)

    async def stop(self) -> None:
        self._stopped.set()

    def health_check(self) -> HealthCheckResult:
        details = {"passes": self.passes, "restarts": self.restarts_total, "stuck": dict(self.stuck),
                   "blocked": dict(self.blocked), "last_progress": self.last_progress}
        idle = self._clock.time() - self.last_progress
        if idle > 3 * self.check_interval:
            return HealthCheckResult.unhealthy(f"no watchdog pass for {idle:.0f}s", **details)
        if self.blocked:
            return HealthCheckResult.degraded(f"stuck and out of restarts: {', '.join(sorted(self.blocked))}",
                                              **details)
        return HealthCheckResult.healthy("OK", **details)

    # -- one pass --------------------------------------------------------------------------------------

    def _idle_for(self, key: DaemonKey, now: float) -> float | None:
        """Seconds since the daemon's last progress, or None when it is not watched."""
        info = self._manager.get_daemon_info(key)
        if info is None or info.instance is None or not self._manager.is_running(key):
            return None
        progress = getattr(info.instance, "last_progress", None)
        if not isinstance(progress, int | float) or isinstance(progress, bool):
            return None
        return now - max(float(progress), info.start_time)

    def _limit_for(self, key: DaemonKey) -> float:
        info = self._manager.get_daemon_info(key)
        own = getattr(getattr(info, "instance", None), "stuck_after", None)
        return float(own) if isinstance(own, int | float) and own > 0 else self.stuck_after

    def _may_restart(self, key: DaemonKey, now: float) -> str | None:
        """None when a restart is allowed now, else why not."""
        history = self._restarts.setdefault(key, deque())
        while history and now - history[0] >= _HOUR:
            history.popleft()
        if len(history) >= self.max_restarts_per_hour:
            return f"{len(history)} watchdog restarts within the last hour"
        if history and now - history[-1] < self.restart_spacing:
            return f"last watchdog restart {now - history[-1]:.0f}s ago (< {self.restart_spacing:g}s)"
        return None

    async def check_once(self) -> list[DaemonKey]:
        """One pass: restart the stuck daemons that may be restarted; returns those restarted."""
        now = self._clock.time()
        stuck: dict[str, float] = {}
        blocked: dict[str, str] = {}
        to_restart: list[DaemonKey] = []
        for key in self._manager.registered_types:
            if key == self._self_type:
                continue
            idle = self._idle_for(key, now)
            if idle is None or idle <= self._limit_for(key):
                continue
            stuck[key.value] = idle
            why_not = self._may_restart(key, now)
            if why_not is not None:
                blocked[key.value] = why_not
                continue
            self._restarts[key].append(now)
            to_restart.append(key)
        self.stuck, self.blocked = stuck, blocked
        for name, why_not in blocked.items():
            log.warning("daemon %s is stuck (%.0fs without progress) but not restarted: %s", name, stuck[name],
                        why_not)
        results = await asyncio.gather(*(self._restart(key, stuck[key.value]) for key in to_restart))
        self.passes += 1
        self.last_progress = self._clock.time()
        return [key for key, ok in zip(to_restart, results, strict=True) if ok]

    async def _restart(self, key: DaemonKey, idle: float) -> bool:
        log.warning("daemon %s is stuck (%.0fs without progress): restarting it", key.value, idle)
        try:
            await self._manager.stop(key)
            started = bool(await self._manager.start(key, wait_for_deps=False))
        except Exception:
            log.exception("watchdog restart of %s failed", key.value)
            return False
        if started:
            self.restarts_total += 1
        else:
            log.error("watchdog restart of %s: the daemon did not start again", key.value)
        return started


async def clock_pause(clock: Clock, seconds: float, stopped: asyncio.Event) -> None:
    """Sleep `seconds` of clock time, or less when `stopped` is set."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        stopper.cancel()


def factory(manager: Any, router: Any = None, **options: Any) -> Callable[[], DaemonWatchdog]:
    """The DAEMON_WATCHDOG factory: a new watchdog per (re)start. `router` is accepted for a uniform
    registration call and unused; `options` go to `DaemonWatchdog`."""
    del router
    return lambda: DaemonWatchdog(manager, **options)
