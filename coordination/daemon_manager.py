"""The daemon manager: registered daemons started on request, supervised, health-checked, stopped.

    manager = get_daemon_manager()
    manager.register_factory("MY_DAEMON", my_factory, depends_on=[DaemonType.EVENT_ROUTER])
    await manager.start_all(profile="minimal")    # or start(t, wait_for_deps=True)
    manager.liveness_probe()                       # every critical daemon started is up and healthy
    await manager.shutdown(timeout=10.0, force=True)

Only daemons that were asked for run: `start(t)` (which waits for, but never starts, its
dependencies) and `start_all(profile)` (the profile's daemons plus their dependencies, in waves).
The health loop checks the running ones and restarts an unhealthy one; it never starts a daemon
nobody asked for. Supervision of each daemon (restart back-off, crash loop, permanent failure,
graceful stop) lives in `daemon_supervisor`, the registry in `daemon_registry`, the health loop
in `daemon_health`, status and probes in `daemon_status`, restart state on disk in
`daemon_state_store`, lifecycle events in `daemon_events`. Time comes from an injectable `Clock`
(`daemon_clock`).

This module is over 250 lines because it is the manager's one public class: the calls of the
API reference (section 1) and the probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from coordination.daemon_clock import Clock, SystemClock
from coordination.daemon_events import EventPublisher, LifecycleEvents
from coordination.daemon_graph import DependencyError, closure, start_levels
from coordination.daemon_health import HealthLoop
from coordination.daemon_registry import DaemonRegistry
from coordination.daemon_state_store import RestartLedger, default_state_path
from coordination.daemon_status import DaemonStatusViews
from coordination.daemon_supervisor import DaemonSupervisor, Factory
from coordination.daemon_types import (
    DAEMON_PROFILES,
    DEPRECATED_DAEMONS,
    DEPRECATION_REPLACEMENTS,
    DaemonInfo,
    DaemonKey,
    DaemonManagerConfig,
    DaemonState,
    DaemonTypeLike,
    resolve_daemon_type,
)
from coordination.protocols import HealthCheckResult

__all__ = ["DaemonManager", "DependencyError", "get_daemon_manager", "reset_daemon_manager"]

log = logging.getLogger(__name__)


class DaemonManager(DaemonStatusViews):
    """Lifecycle of the registered daemons. One per process via `get_instance()`; tests may build
    their own with an injected `clock`, `router` and `state_path`."""

    _instance: ClassVar[DaemonManager | None] = None

    def __init__(self, config: DaemonManagerConfig | None = None, *, router: EventPublisher | None = None,
                 clock: Clock | None = None, state_path: Path | str | None = None, persist: bool = True,
                 profiles: Mapping[str, Iterable[DaemonTypeLike]] | None = None,
                 health_check_timeout: float = 5.0, readiness_max_lag: int = 1000,
                 rng: random.Random | None = None) -> None:
        self.config = config or DaemonManagerConfig()
        self._clock = clock or SystemClock()
        self._rng = rng
        self._events = LifecycleEvents(router)
        path = (Path(state_path) if state_path is not None else default_state_path()) if persist else None
        self._ledger = RestartLedger(path, self._clock.time())
        self._registry = DaemonRegistry(self.config, self._ledger)
        self._profiles = {name: tuple(members) for name, members in (profiles or DAEMON_PROFILES).items()}
        self._supervisors: dict[DaemonKey, DaemonSupervisor] = {}
        self._requested: dict[DaemonKey, None] = {}  # insertion-ordered set of the daemons asked for
        self._started_at: dict[DaemonKey, float] = {}  # monotonic start of the current instance
        self._background: set[asyncio.Task[Any]] = set()
        self._readiness_max_lag = readiness_max_lag
        self._health = HealthLoop(self._clock, candidates=self._health_candidates,
                                  interval=lambda info: info.health_check_interval, report=self._on_health,
                                  timeout=health_check_timeout, idle_interval=self.config.health_check_interval)
        self._health_task: asyncio.Task[None] | None = None

    # -- singleton -----------------------------------------------------------------------------------

    @classmethod
    def get_instance(cls, config: DaemonManagerConfig | None = None) -> DaemonManager:
        """The process's manager, created on first use (with `config`, if given then), with the
        built-in daemons registered on the process's router and the implemented profiles."""
        if cls._instance is None:
            from coordination.daemons.builtin import IMPLEMENTED_PROFILES, register_builtin_daemons
            from coordination.event_router import get_router

            manager = cls(config, profiles=IMPLEMENTED_PROFILES)
            register_builtin_daemons(manager, get_router)
            cls._instance = manager
        return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        """Forget the process's manager (tests), cancelling its tasks without waiting for them."""
        manager, cls._instance = cls._instance, None
        if manager is not None:
            manager._abandon()

    def _abandon(self) -> None:
        tasks = [self._health_task, *self._background, *(s.task for s in self._supervisors.values())]
        for task in tasks:
            if task is not None and not task.done():
                with contextlib.suppress(RuntimeError):  # its loop may be closed already
                    task.cancel()
        self._supervisors.clear()
        self._requested.clear()

    # -- registration ----------------------------------------------------------------------------------

    def register_factory(self, daemon_type: DaemonTypeLike, factory: Factory,
                         depends_on: Iterable[DaemonTypeLike] | None = None,
                         health_check_interval: float | None = None, auto_restart: bool | None = None,
                         max_restarts: int | None = None, *, soft_depends_on: Iterable[DaemonTypeLike] | None = None,
                         startup_grace_period: float | None = None, restart_delay: float = 5.0) -> DaemonKey:
        """Register how to run a daemon (see `daemon_supervisor` for the factory forms). Returns the
        resolved daemon type: the DaemonType member, or a CustomDaemonType for a name like "MY_DAEMON"."""
        info = self._registry.register(
            daemon_type, factory, now=self._clock.time(), depends_on=depends_on, soft_depends_on=soft_depends_on,
            health_check_interval=health_check_interval, auto_restart=auto_restart, max_restarts=max_restarts,
            startup_grace_period=startup_grace_period, restart_delay=restart_delay)
        return info.daemon_type

    @property
    def registered_types(self) -> list[DaemonKey]:
        return list(self._registry)

    @property
    def profiles(self) -> dict[str, tuple[DaemonTypeLike, ...]]:
        return dict(self._profiles)

    @property
    def clock(self) -> Clock:
        """The clock supervision and health run on (daemons that schedule work use it too)."""
        return self._clock

    # -- starting ------------------------------------------------------------------------------------------

    def _refuse(self, reason: str, *, strict: bool = False) -> bool:
        log.warning("not starting: %s", reason)
        if strict and self.config.strict_registry_validation:
            raise DependencyError(reason)
        return False

    async def start(self, daemon_type: DaemonTypeLike, wait_for_deps: bool = True) -> bool:
        """Start one daemon; True once it runs (or already ran). Its dependencies must be running:
        with `wait_for_deps` they are waited for (config poll interval and timeout), never started."""
        key = resolve_daemon_type(daemon_type)
        info = self._registry.get(key)
        if info is None:
            return self._refuse(f"{key.name}: no factory registered", strict=True)
        if self.is_permanently_failed(key):
            return self._refuse(f"{key.name} is permanently failed; call clear_permanently_failed() first")
        if self._active(key):
            return self._refuse(f"{key.name} is stopping") if self._supervisors[key].stopping else \
                self._mark_requested(key)
        unknown = [d.name for d in info.depends_on if d not in self._registry]
        if unknown:
            return self._refuse(f"{key.name} depends on unregistered {', '.join(unknown)}", strict=True)
        missing = [d for d in info.depends_on if not self.is_running(d)]
        if missing and not wait_for_deps:
            return self._refuse(f"{key.name}: dependencies not running: {', '.join(d.name for d in missing)}")
        if missing and not await self._wait_for(missing):
            late = ", ".join(d.name for d in missing if not self.is_running(d))
            return self._refuse(f"{key.name}: dependencies not running after "
                                f"{self.config.dependency_wait_timeout:g}s: {late}")
        if self._active(key):  # started by someone else while we waited
            return self._mark_requested(key)
        self._launch(info)
        return True

    def _mark_requested(self, key: DaemonKey) -> bool:
        self._requested[key] = None
        return True

    def _active(self, key: DaemonKey) -> bool:
        supervisor = self._supervisors.get(key)
        return supervisor is not None and supervisor.task is not None and not supervisor.task.done()

    async def _wait_for(self, deps: list[DaemonKey]) -> bool:
        c, clock = self.config, self._clock
        deadline = clock.monotonic() + c.dependency_wait_timeout
        while not all(self.is_running(d) for d in deps):
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return False
            await clock.sleep(min(c.dependency_poll_interval, remaining))
        return True

    def _launch(self, info: DaemonInfo) -> None:
        key = info.daemon_type
        missing_soft = [d.name for d in info.soft_depends_on if not self.is_running(d)]
        info.degraded_mode = bool(missing_soft)
        if missing_soft:
            log.info("%s starts in degraded mode: %s not running", key.name, ", ".join(missing_soft))
        if key in DEPRECATED_DAEMONS:
            use = DEPRECATION_REPLACEMENTS.get(key)  # type: ignore[call-overload]
            log.warning("daemon %s is deprecated%s", key.name, f"; use {use}" if use else "")
        supervisor = DaemonSupervisor(info, self._registry.factory(key), self, clock=self._clock,
                                      ledger=self._ledger, events=self._events,
                                      recovery_cooldown=self.config.recovery_cooldown, rng=self._rng)
        self._supervisors[key] = supervisor
        self._requested[key] = None
        info.last_health, info.last_error = None, None
        info.start_time = self._clock.time()
        self._started_at[key] = self._clock.monotonic()
        self.transition(info, DaemonState.RUNNING, "started")
        supervisor.launch()
        self._events.emit("DAEMON_STARTED", {"daemon_name": info.name, "pid": os.getpid()})
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.get_running_loop().create_task(self._health.run(), name="daemon-health")

    async def start_all(self, profile: str | None = None) -> dict[DaemonKey, bool]:
        """Start a profile's daemons (all registered ones without a profile) plus their dependencies:
        dependencies first, each wave concurrently. Returns whether each daemon started."""
        if profile is None:
            wanted = self.registered_types
        elif profile in self._profiles:
            wanted = [resolve_daemon_type(t) for t in self._profiles[profile]]
        else:
            raise ValueError(f"unknown profile {profile!r}; known profiles: {', '.join(sorted(self._profiles))}")
        unregistered = [t.name for t in wanted if t not in self._registry]
        if unregistered:
            raise DependencyError(f"profile {profile!r} names daemons without a registered factory: "
                                  f"{', '.join(unregistered)}")
        deps = self._registry.dependencies()
        results: dict[DaemonKey, bool] = {}
        for wave in start_levels(deps, closure(deps, wanted)):
            blocked = [t for t in wave if any(results.get(d) is False for d in deps[t])]
            for t in blocked:
                log.warning("not starting %s: a dependency did not start", t.name)
                results[t] = False
            ready = [t for t in wave if t not in blocked]
            outcomes = await asyncio.gather(*(self.start(t, wait_for_deps=True) for t in ready))
            results.update(zip(ready, outcomes, strict=True))
        return results

    # -- stopping ------------------------------------------------------------------------------------------

    async def stop(self, daemon_type: DaemonTypeLike) -> bool:
        """Stop one daemon: graceful for `shutdown_timeout`, then cancelled. False if unregistered."""
        key = resolve_daemon_type(daemon_type)
        if key not in self._registry:
            return False
        self._requested.pop(key, None)
        await self._stop_one(key, self.config.shutdown_timeout, force=True, reason="stopped")
        return True

    async def restart(self, daemon_type: DaemonTypeLike, wait_for_deps: bool = True) -> bool:
        """An operator's restart: stop the daemon gracefully (then cancel, as `stop`) and start a new
        instance at once. Not a failure: no back-off, and it does not count toward `max_restarts`.
        True once the new instance runs; False when unregistered or it did not start."""
        key = resolve_daemon_type(daemon_type)
        if key not in self._registry:
            return False
        await self._stop_one(key, self.config.shutdown_timeout, force=True, reason="restart requested")
        return await self.start(key, wait_for_deps=wait_for_deps)

    async def _stop_one(self, key: DaemonKey, graceful: float, *, force: bool, reason: str) -> bool:
        info = self._registry.get(key)
        assert info is not None
        supervisor = self._supervisors.get(key)
        if supervisor is None or not self._active(key):
            self._supervisors.pop(key, None)
            if info.state not in (DaemonState.STOPPED, DaemonState.FAILED):
                self.transition(info, DaemonState.STOPPED, reason)
            return True
        self.transition(info, DaemonState.STOPPING, reason)
        ended = await supervisor.stop(graceful, force=force, force_timeout=self.config.force_kill_timeout)
        if ended or force:
            self._supervisors.pop(key, None)
            info.task, info.instance = None, None
            self.transition(info, DaemonState.STOPPED, reason)
            self._events.emit("DAEMON_STOPPED", {"daemon_name": info.name, "reason": reason})
        return ended

    async def shutdown(self, timeout: float | None = None, force: bool = False) -> bool:
        """Stop every daemon, dependents before their dependencies; `timeout` (default
        `shutdown_timeout`) bounds the graceful part, after which `force` cancels what still runs.
        True when every daemon stopped."""
        budget = self.config.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        for task in [self._health_task, *self._background]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._health_task = None
        active = [k for k in self._supervisors if self._active(k)]
        all_stopped = True
        for wave in reversed(start_levels(self._registry.dependencies(), active)):
            remaining = max(0.0, deadline - loop.time())
            stopped = await asyncio.gather(*(self._stop_one(k, remaining, force=force, reason="shutdown")
                                             for k in wave))
            all_stopped = all_stopped and all(stopped)
        self._requested.clear()
        await self._events.drain(timeout=2.0)
        return all_stopped

    # -- supervisor callbacks ----------------------------------------------------------------------------

    def transition(self, info: DaemonInfo, state: DaemonState, reason: str, error: str | None = None) -> None:
        old = info.state
        if old is state:
            return
        info.state = state
        log.log(logging.WARNING if state in (DaemonState.FAILED, DaemonState.RESTARTING) else logging.INFO,
                "daemon %s: %s -> %s (%s)%s", info.name, old.value, state.value, reason, f": {error}" if error else "")
        self._events.emit("DAEMON_STATUS_CHANGED", {"daemon_name": info.name, "old_status": old.value,
                                                    "new_status": state.value, "reason": reason, "error": error})

    def instance_ready(self, info: DaemonInfo) -> None:
        self._started_at[info.daemon_type] = self._clock.monotonic()
        self._health.schedule(info)

    def finished(self, info: DaemonInfo) -> None:
        self._requested.pop(info.daemon_type, None)
        self._events.emit("DAEMON_STOPPED", {"daemon_name": info.name, "reason": "finished"})

    # -- health ------------------------------------------------------------------------------------------------

    def _health_candidates(self) -> list[DaemonInfo]:
        infos = (self._registry.get(k) for k in self._requested)
        return [i for i in infos if i is not None and i.state is DaemonState.RUNNING and self._active(i.daemon_type)]

    def _on_health(self, info: DaemonInfo, result: HealthCheckResult) -> None:
        info.last_health, info.last_health_time = result, self._clock.time()
        supervisor = self._supervisors.get(info.daemon_type)
        if result.healthy or supervisor is None or supervisor.stopping or info.state is not DaemonState.RUNNING:
            return
        age = self._clock.monotonic() - self._started_at.get(info.daemon_type, 0.0)
        if age < info.startup_grace_period:
            log.info("daemon %s unhealthy within its startup grace (%s)", info.name, result.message)
        elif not info.auto_restart:
            log.warning("daemon %s unhealthy (%s); auto_restart is off", info.name, result.message)
        else:
            task = asyncio.get_running_loop().create_task(
                supervisor.restart(f"health check failed: {result.message}", self.config.force_kill_timeout))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- permanent failures -------------------------------------------------------------------------------------

    def is_permanently_failed(self, daemon_type: DaemonTypeLike) -> bool:
        return self._ledger.is_permanently_failed(resolve_daemon_type(daemon_type).value, self._clock.time())

    def clear_permanently_failed(self, daemon_type: DaemonTypeLike) -> bool:
        """Forget a daemon's restarts and permanent failure; True if it was permanently failed."""
        key = resolve_daemon_type(daemon_type)
        was_failed = self.is_permanently_failed(key)
        self._ledger.clear(key.value, self._clock.time())
        info = self._registry.get(key)
        if info is not None:
            info.restart_count, info.last_error = 0, None
            if info.state is DaemonState.FAILED and not self._active(key):
                self.transition(info, DaemonState.STOPPED, "permanent failure cleared")
        return was_failed


def get_daemon_manager(config: DaemonManagerConfig | None = None) -> DaemonManager:
    """The process's DaemonManager (created on first use)."""
    return DaemonManager.get_instance(config)


def reset_daemon_manager() -> None:
    DaemonManager.reset_instance()

