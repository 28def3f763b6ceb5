"""One daemon under supervision: build it, run it, restart it when it fails, stop it on request.

A factory is called once per (re)start. What it returns decides how the daemon runs:

    async def factory(): ...           # a coroutine: it IS the daemon; it runs until the daemon ends
    def factory(): return MyDaemon()   # an object with `async run()`, optionally `health_check()`
    async def factory(): return obj    #   and `async stop()` (an async builder works too)

The daemon's run ends in one of three ways:

* it returns: the daemon finished (state STOPPED, no restart);
* it raises, whatever the exception type, or the manager asked for a restart (an unhealthy
  health check): a failure. While `restart_count < max_restarts` it is restarted after
  `restart_backoff(n)` (5 s x 2^n, +-10 % jitter, at most 300 s), and never sooner than
  `recovery_cooldown` after its previous start; a daemon that ran an hour without failing starts
  again from restart_count 0. When the limit is reached it is permanently failed
  (DAEMON_PERMANENTLY_FAILED) until the manager clears it. Three restarts within five minutes
  is a crash loop, announced once (DAEMON_CRASH_LOOP_DETECTED) until the loop ends;
* the manager stops it (`stop`): an object daemon is asked to `stop()`, a coroutine daemon is
  cancelled; after the grace period a forced stop cancels it, and a daemon that ignores even that
  is abandoned (logged) so shutdown never hangs.

The body runs in its own task under the supervisor's task, so a restart can cancel the body
without cancelling the supervisor. In the supervisor's task, the body's and the tasks the body
starts, `current_daemon()` is the daemon's name (log records carry it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from coordination.daemon_clock import Clock
from coordination.daemon_events import LifecycleEvents
from coordination.daemon_state_store import RestartLedger
from coordination.daemon_types import DaemonInfo, DaemonState

__all__ = ["CRASH_LOOP_RESTARTS", "CRASH_LOOP_WINDOW", "DaemonSupervisor", "Factory", "current_daemon",
           "restart_backoff"]

log = logging.getLogger(__name__)

Factory = Callable[[], Any]
BACKOFF_CAP = 300.0
BACKOFF_JITTER = 0.1
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW = 300.0
STABLE_RESET = 3600.0  # a daemon that ran this long without failing starts again from restart_count 0

_current_daemon: contextvars.ContextVar[str | None] = contextvars.ContextVar("ringrift_current_daemon",
                                                                             default=None)


def current_daemon() -> str | None:
    """The name of the daemon whose supervisor, body or a task the body started runs here, if any."""
    return _current_daemon.get()


def restart_backoff(attempt: int, base: float = 5.0, rng: random.Random | None = None) -> float:
    """Delay before restart number `attempt` (0-based): base x 2^attempt, +-10 %, in [1, 300] s."""
    raw = base * 2 ** min(attempt, 32)
    jitter = 1.0 + (rng or random).uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
    return max(1.0, min(BACKOFF_CAP, raw * jitter))


class SupervisorHost(Protocol):
    """What a supervisor reports to its manager."""

    def transition(self, info: DaemonInfo, state: DaemonState, reason: str, error: str | None = None) -> None: ...

    def instance_ready(self, info: DaemonInfo) -> None: ...

    def finished(self, info: DaemonInfo) -> None: ...


class DaemonSupervisor:
    def __init__(self, info: DaemonInfo, factory: Factory, host: SupervisorHost, *, clock: Clock,
                 ledger: RestartLedger, events: LifecycleEvents, recovery_cooldown: float,
                 rng: random.Random | None = None) -> None:
        self.info = info
        self._factory = factory
        self._host = host
        self._clock = clock
        self._ledger = ledger
        self._events = events
        self._cooldown = recovery_cooldown
        self._rng = rng
        self._body: asyncio.Task[None] | None = None
        self._restart_reason: str | None = None
        self._stopping = False
        self._crash_loop = False
        self.task: asyncio.Task[None] | None = None

    def launch(self) -> asyncio.Task[None]:
        self.task = asyncio.get_running_loop().create_task(self._supervise(), name=f"daemon:{self.info.name}")
        self.info.task = self.task
        return self.task

    # -- running -----------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        _current_daemon.set(self.info.name)  # this task's own context, copied by the body's task and its tasks
        info = self.info
        while True:
            started = self._clock.monotonic()
            info.start_time = self._clock.time()
            error = await self._run_once()
            if self._stopping:
                return
            if error is None:
                self._host.transition(info, DaemonState.STOPPED, "finished")
                self._host.finished(info)
                return
            delay = self._after_failure(error, self._clock.monotonic() - started)
            if delay is None:
                return
            await self._clock.sleep(delay)
            if self._stopping:
                return
            self._host.transition(info, DaemonState.RUNNING, f"restarted ({info.restart_count}/{info.max_restarts})")

    async def _run_once(self) -> str | None:
        """Run the body once; the failure's description, or None when it finished."""
        self._restart_reason = None
        loop = asyncio.get_running_loop()
        body = self._body = loop.create_task(self._run_body(), name=f"daemon-body:{self.info.name}")
        try:
            await asyncio.wait({body})
        except asyncio.CancelledError:  # the manager is stopping us: the body goes too
            body.cancel()
            while not body.done():  # this task ends only with its body: a stop never reports a live daemon gone
                try:
                    await asyncio.wait({body})
                except asyncio.CancelledError:
                    body.cancel()  # a forced stop: pass it on
            self.info.instance = None
            raise
        self.info.instance = None
        if self._restart_reason is not None:
            return self._restart_reason
        if body.cancelled():
            return None if self._stopping else "CancelledError: the daemon was cancelled"
        exc = body.exception()
        if exc is not None:
            log.error("daemon %s failed: %s: %s", self.info.name, type(exc).__name__, exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _run_body(self) -> None:
        result = self._factory()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and callable(getattr(result, "run", None)):
            self.info.instance = result
            self._host.instance_ready(self.info)
            await result.run()

    def _after_failure(self, error: str, ran_for: float) -> float | None:
        """Account for a failure; the delay before the restart, or None when there is none."""
        info, name, now = self.info, self.info.name, self._clock.time()
        info.last_error = error
        last = self._ledger.last_restart(name)
        if last is not None and now - last > STABLE_RESET and self._ledger.count(name):
            self._ledger.reset(name, now)
        info.restart_count = self._ledger.count(name)
        info.last_failure_time = now
        if not info.auto_restart:
            self._host.transition(info, DaemonState.FAILED, "failed (auto_restart is off)", error)
            return None
        if info.restart_count >= info.max_restarts:
            self._ledger.mark_permanently_failed(name, now)
            self._host.transition(info, DaemonState.FAILED, f"permanently failed after {info.restart_count} restarts",
                                  error)
            self._events.emit("DAEMON_PERMANENTLY_FAILED", {"daemon_name": name, "restart_count": info.restart_count,
                                                            "max_restarts": info.max_restarts, "error": error})
            return None
        info.restart_count = self._ledger.record_restart(name, now)
        self._check_crash_loop(now)
        backoff = restart_backoff(info.restart_count - 1, info.restart_delay, self._rng)
        delay = max(backoff, self._cooldown - ran_for)
        self._host.transition(info, DaemonState.RESTARTING,
                              f"restart {info.restart_count}/{info.max_restarts} in {delay:.1f}s", error)
        return delay

    def _check_crash_loop(self, now: float) -> None:
        recent = self._ledger.restarts_within(self.info.name, CRASH_LOOP_WINDOW, now)
        if recent < CRASH_LOOP_RESTARTS:
            self._crash_loop = False
            return
        if not self._crash_loop:
            self._crash_loop = True
            log.error("daemon %s is crash-looping: %d restarts in %d min", self.info.name, recent,
                      CRASH_LOOP_WINDOW // 60)
            self._events.emit("DAEMON_CRASH_LOOP_DETECTED", {
                "daemon_name": self.info.name, "restart_count": recent,
                "window_minutes": int(CRASH_LOOP_WINDOW // 60), "max_restarts": self.info.max_restarts})

    # -- control from the manager ----------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def restart(self, reason: str, stop_timeout: float) -> None:
        """End the current run as a failure (`reason`): the usual restart rules then apply."""
        body = self._body
        if self._stopping or body is None or body.done():
            return
        self._restart_reason = reason
        stop = getattr(self.info.instance, "stop", None)
        if callable(stop):
            await _call_stop(self.info.name, stop, stop_timeout)
            await asyncio.wait({body}, timeout=stop_timeout)
        if not body.done():
            body.cancel()

    async def stop(self, graceful_timeout: float, *, force: bool, force_timeout: float) -> bool:
        """Stop the daemon; True once its task ended. Without `force` a daemon still running after
        `graceful_timeout` is left running (False)."""
        self._stopping = True
        task = self.task
        if task is None or task.done():
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + graceful_timeout
        stop = getattr(self.info.instance, "stop", None)
        if callable(stop):
            await _call_stop(self.info.name, stop, graceful_timeout)
        else:
            task.cancel()  # a coroutine daemon's only stop signal
        if await _ended(task, deadline - loop.time()):
            return True
        if not force:
            log.error("daemon %s still running %.1fs after it was asked to stop (not forced)", self.info.name,
                      graceful_timeout)
            return False
        task.cancel()
        if await _ended(task, force_timeout):
            return True
        log.error("daemon %s ignored cancellation for %.1fs: abandoned", self.info.name, force_timeout)
        return False


async def _ended(task: asyncio.Task[None], timeout: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
    if done:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
    return bool(done)


async def _call_stop(name: str, stop: Callable[[], Any], timeout: float) -> None:
    try:
        result = stop()
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
            if not done:
                task.cancel()
                log.warning("daemon %s: stop() did not return within %.1fs", name, timeout)
            else:
                task.result()
    except Exception as exc:
        log.warning("daemon %s: stop() raised %s: %s", name, type(exc).__name__, exc)
