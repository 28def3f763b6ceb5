"""The daemons a manager knows: factory and settings per daemon type, with dependency checks.

    registry.register("MY_DAEMON", factory, depends_on=[DaemonType.EVENT_ROUTER], max_restarts=3)

Registration resolves the daemon type (a catalog type in any spelling, else a custom type), fills
the defaults from the manager's config, and refuses a self-dependency or a dependency cycle
(`DependencyError`). A dependency that is not registered yet is fine here: daemons may be
registered in any order; `start` and `start_all` refuse what is still missing then.

Defaults: `health_check_interval` is the config's `health_check_interval`, and for a critical
daemon never more than `critical_daemon_health_interval`; `auto_restart` and `max_restarts` are the
config's `auto_restart_failed` and `max_restart_attempts`. `restart_count` and a permanent failure
are taken over from the restart ledger, so they survive a manager restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from coordination.daemon_graph import DependencyError, check_no_cycle
from coordination.daemon_state_store import RestartLedger
from coordination.daemon_supervisor import Factory
from coordination.daemon_types import (
    DaemonInfo,
    DaemonKey,
    DaemonManagerConfig,
    DaemonState,
    DaemonTypeLike,
    is_critical,
    resolve_daemon_type,
)

__all__ = ["DaemonRegistry"]


class DaemonRegistry:
    def __init__(self, config: DaemonManagerConfig, ledger: RestartLedger) -> None:
        self._config = config
        self._ledger = ledger
        self._infos: dict[DaemonKey, DaemonInfo] = {}
        self._factories: dict[DaemonKey, Factory] = {}

    def register(self, daemon_type: DaemonTypeLike, factory: Factory, *, now: float,
                 depends_on: Iterable[DaemonTypeLike] | None = None,
                 soft_depends_on: Iterable[DaemonTypeLike] | None = None,
                 health_check_interval: float | None = None, auto_restart: bool | None = None,
                 max_restarts: int | None = None, startup_grace_period: float | None = None,
                 restart_delay: float = 5.0) -> DaemonInfo:
        key = resolve_daemon_type(daemon_type)
        if not callable(factory):
            raise TypeError(f"the factory of {key.name} is not callable: {factory!r}")
        deps = _unique(resolve_daemon_type(d) for d in depends_on or ())
        soft = _unique(resolve_daemon_type(d) for d in soft_depends_on or ())
        if key in deps:
            raise DependencyError(f"{key.name} cannot depend on itself")
        graph: dict[DaemonKey, list[DaemonKey]] = {k: i.depends_on for k, i in self._infos.items()}
        graph[key] = deps
        check_no_cycle(graph, key)
        c = self._config
        interval = c.health_check_interval if health_check_interval is None else health_check_interval
        if is_critical(key):
            interval = min(interval, c.critical_daemon_health_interval)
        if interval <= 0:
            raise ValueError(f"health_check_interval of {key.name} must be > 0")
        info = DaemonInfo(
            daemon_type=key, health_check_interval=interval, depends_on=deps, soft_depends_on=soft,
            auto_restart=c.auto_restart_failed if auto_restart is None else auto_restart,
            max_restarts=c.max_restart_attempts if max_restarts is None else max_restarts,
            restart_delay=restart_delay, restart_count=self._ledger.count(key.value))
        if startup_grace_period is not None:
            info.startup_grace_period = startup_grace_period
        if self._ledger.is_permanently_failed(key.value, now):
            info.state, info.last_error = DaemonState.FAILED, "permanently failed (restored from the restart state)"
        previous = self._infos.get(key)
        if previous is not None and previous.task is not None and not previous.task.done():
            raise ValueError(f"{key.name} is running: stop it before registering it again")
        self._infos[key] = info
        self._factories[key] = factory
        return info

    def get(self, daemon_type: DaemonTypeLike) -> DaemonInfo | None:
        return self._infos.get(resolve_daemon_type(daemon_type))

    def factory(self, key: DaemonKey) -> Factory:
        return self._factories[key]

    def dependencies(self) -> dict[DaemonKey, list[DaemonKey]]:
        return {key: info.depends_on for key, info in self._infos.items()}

    def __contains__(self, key: Any) -> bool:
        return key in self._infos

    def __iter__(self) -> Iterator[DaemonKey]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def infos(self) -> list[DaemonInfo]:
        return list(self._infos.values())


def _unique(keys: Iterable[DaemonKey]) -> list[DaemonKey]:
    return list(dict.fromkeys(keys))
