"""Calling a daemon's health check, whatever it returns, and the manager's health loop.

`check_health(daemon, timeout)` calls `daemon.health_check()` and always comes back with a
`HealthCheckResult`, never an exception:

    HealthCheckResult          as is
    dict                       healthy = d["healthy"] (default True); status, message, details
                               from their keys; other keys become details
    bool                       healthy or not (status RUNNING / ERROR)
    None, other objects        healthy; an object with `.healthy` is read like a dict
    an awaitable of the above  awaited for at most `timeout` seconds, then unhealthy "timed out"
    raised an exception        unhealthy, naming the exception

A sync `health_check` runs on the event loop and must not block; an async one may take its time
(it is abandoned, and cancelled, after the timeout).

`HealthLoop` calls the checks of the daemons the manager hands it, each at its own interval,
concurrently, and reports each result back; one failing check or callback never stops it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from coordination.contracts import CoordinatorStatus
from coordination.daemon_clock import Clock
from coordination.daemon_types import DaemonInfo
from coordination.protocols import HealthCheckResult

__all__ = ["HealthLoop", "check_health", "to_health_result"]

log = logging.getLogger(__name__)
_KNOWN_KEYS = frozenset({"healthy", "status", "message", "details", "timestamp"})


def _status(raw: Any, healthy: bool) -> CoordinatorStatus | str:
    if raw is None or raw == "":
        return CoordinatorStatus.RUNNING if healthy else CoordinatorStatus.ERROR
    try:
        return CoordinatorStatus(str(getattr(raw, "value", raw)).lower())
    except ValueError:
        return str(raw)


def to_health_result(raw: Any) -> HealthCheckResult:
    """Normalise whatever a health check returned (see the module docstring)."""
    if isinstance(raw, HealthCheckResult):
        return raw
    if isinstance(raw, bool):
        return HealthCheckResult(raw, _status(None, raw))
    if isinstance(raw, Mapping):
        healthy = bool(raw.get("healthy", True))
        details = dict(raw.get("details") or {})
        details.update({k: v for k, v in raw.items() if k not in _KNOWN_KEYS})
        return HealthCheckResult(healthy, _status(raw.get("status"), healthy), str(raw.get("message") or ""),
                                 details=details)
    if raw is not None and hasattr(raw, "healthy"):
        healthy = bool(raw.healthy)
        details = dict(getattr(raw, "details", None) or {})
        return HealthCheckResult(healthy, _status(getattr(raw, "status", None), healthy),
                                 str(getattr(raw, "message", "") or ""), details=details)
    return HealthCheckResult(True)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned check's late failure must not be reported as "never retrieved"


async def check_health(daemon: Any, timeout: float) -> HealthCheckResult | None:
    """The daemon's health as a HealthCheckResult, or None when it has no `health_check`."""
    check = getattr(daemon, "health_check", None)
    if not callable(check):
        return None
    try:
        raw = check()
        if inspect.isawaitable(raw):
            task = asyncio.ensure_future(raw)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                task.add_done_callback(_consume)
                return HealthCheckResult.unhealthy(f"health check timed out after {timeout:g}s")
            raw = task.result()
        return to_health_result(raw)
    except Exception as exc:
        return HealthCheckResult.unhealthy(f"health check raised {type(exc).__name__}: {exc}")


Report = Callable[[DaemonInfo, HealthCheckResult], Awaitable[None] | None]


class HealthLoop:
    """Checks the daemons `due()` lists, each every `interval(info)` seconds of `clock` time."""

    def __init__(self, clock: Clock, *, candidates: Callable[[], Iterable[DaemonInfo]],
                 interval: Callable[[DaemonInfo], float], report: Report, timeout: float,
                 idle_interval: float) -> None:
        self._clock = clock
        self._candidates = candidates
        self._interval = interval
        self._report = report
        self._timeout = timeout
        self._idle = idle_interval
        self._next: dict[Any, float] = {}
        self._wake = asyncio.Event()
        self.passes = 0

    def schedule(self, info: DaemonInfo) -> None:
        """(Re)start the interval of `info` from now (call when its instance changed)."""
        self._next[info.daemon_type] = self._clock.monotonic() + self._interval(info)
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health pass failed; the health loop goes on")
            await self._sleep(self._next_delay())

    async def run_pass(self, *, force: bool = False) -> None:
        """Check every candidate whose interval elapsed (all of them with `force`), concurrently."""
        now = self._clock.monotonic()
        due: list[DaemonInfo] = []
        for info in self._candidates():
            when = self._next.setdefault(info.daemon_type, now + self._interval(info))
            if force or when <= now:
                self._next[info.daemon_type] = now + self._interval(info)
                if info.instance is not None:
                    due.append(info)
        self.passes += 1
        if due:
            results = await asyncio.gather(*(check_health(info.instance, self._timeout) for info in due))
            for info, result in zip(due, results, strict=True):
                if result is not None:
                    await self._deliver(info, result)

    async def _deliver(self, info: DaemonInfo, result: HealthCheckResult) -> None:
        try:
            outcome = self._report(info, result)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("handling the health of %s failed", info.name)

    def _next_delay(self) -> float:
        live = {info.daemon_type for info in self._candidates()}
        for gone in set(self._next) - live:
            del self._next[gone]
        if not self._next:
            return self._idle
        return max(0.0, min(self._next.values()) - self._clock.monotonic())

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Not awaited: awaiting here could swallow a cancellation of the loop itself.
            sleeper.cancel()
            waker.cancel()
