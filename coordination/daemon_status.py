"""What the daemon manager reports: status, per-daemon health, liveness and readiness probes.

`DaemonStatusViews` is a part of `DaemonManager` (a mixin), kept apart because it only reads the
manager's state:

* `get_status()` -> {daemon type: DaemonInfo} (snapshots), `status_report()` the same as JSON data;
* `get_all_daemon_health()` / `get_daemon_health(t)`: the status entry plus `healthy`, `running`,
  `permanently_failed`, `message` and `last_check`;
* `liveness_probe()` -> bool: every critical daemon that was started runs and is not unhealthy;
* `readiness_probe()` -> bool: daemons were started and each runs, is healthy and has its
  consumers caught up (a health result's `consumer_lag` detail within `readiness_max_lag`);
  `not_ready_reasons()` says why not;
* `health_check()`: the manager's own HealthCheckResult (unhealthy when a fifth of its daemons failed).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from coordination.daemon_registry import DaemonRegistry
from coordination.daemon_state_store import RestartLedger
from coordination.daemon_types import (
    DaemonInfo,
    DaemonKey,
    DaemonState,
    DaemonTypeLike,
    is_critical,
    resolve_daemon_type,
)
from coordination.protocols import HealthCheckResult

__all__ = ["DaemonStatusViews"]


class DaemonStatusViews:
    """Read-only views of a DaemonManager's daemons."""

    _registry: DaemonRegistry
    _ledger: RestartLedger
    _requested: dict[DaemonKey, None]
    _readiness_max_lag: int

    if TYPE_CHECKING:  # provided by DaemonManager
        def _active(self, key: DaemonKey) -> bool: ...

        def is_permanently_failed(self, daemon_type: DaemonTypeLike) -> bool: ...

    def is_running(self, daemon_type: DaemonTypeLike) -> bool:
        key = resolve_daemon_type(daemon_type)
        info = self._registry.get(key)
        return info is not None and info.state is DaemonState.RUNNING and self._active(key)

    def get_daemon_info(self, daemon_type: DaemonTypeLike) -> DaemonInfo | None:
        return self._registry.get(daemon_type)

    def get_status(self) -> dict[DaemonKey, DaemonInfo]:
        """A snapshot (shallow copies) of every registered daemon's info."""
        return {info.daemon_type: copy.copy(info) for info in self._registry.infos()}

    def status_report(self) -> dict[str, Any]:
        """`get_status()` as JSON-ready data, with counts."""
        infos = self._registry.infos()
        running = sum(1 for i in infos if i.state is DaemonState.RUNNING)
        failed = sum(1 for i in infos if i.state is DaemonState.FAILED)
        return {"running": bool(self._requested), "daemons": {i.name: i.to_dict() for i in infos},
                "summary": {"total": len(infos), "running": running, "failed": failed,
                            "stopped": len(infos) - running - failed}}

    def _health_entry(self, info: DaemonInfo) -> dict[str, Any]:
        last = info.last_health
        healthy = info.state not in (DaemonState.FAILED, DaemonState.RESTARTING) and (last is None or last.healthy)
        return {**info.to_dict(), "healthy": healthy, "running": self.is_running(info.daemon_type),
                "permanently_failed": self.is_permanently_failed(info.daemon_type),
                "message": last.message if last else (info.last_error or ""),
                "last_check": info.last_health_time or None}

    def get_all_daemon_health(self) -> dict[DaemonKey, dict[str, Any]]:
        """Per registered daemon: its status entry plus `healthy`, `running`, `message`, `last_check`."""
        return {info.daemon_type: self._health_entry(info) for info in self._registry.infos()}

    def get_daemon_health(self, daemon_type: DaemonTypeLike) -> dict[str, Any] | None:
        info = self._registry.get(daemon_type)
        return None if info is None else self._health_entry(info)

    def liveness_probe(self) -> bool:
        """True when every critical daemon that was started is running and not unhealthy."""
        for key in self._requested:
            info = self._registry.get(key)
            if info is not None and is_critical(key):
                if not self.is_running(key) or (info.last_health is not None and not info.last_health.healthy):
                    return False
        return True

    def not_ready_reasons(self) -> list[str]:
        """Why `readiness_probe()` is False (empty when ready)."""
        if not self._requested:
            return ["no daemon started"]
        reasons = []
        for key in self._requested:
            info = self._registry.get(key)
            assert info is not None
            last = info.last_health
            if not self.is_running(key):
                reasons.append(f"{info.name} is {info.state.value}")
            elif last is not None and not last.healthy:
                reasons.append(f"{info.name} is unhealthy: {last.message}")
            elif last is not None and (last.details.get("consumer_lag") or 0) > self._readiness_max_lag:
                reasons.append(f"{info.name} lags {last.details['consumer_lag']} > {self._readiness_max_lag}")
        return reasons

    def readiness_probe(self) -> bool:
        """True when daemons were started and each is running, healthy and its consumers are caught
        up (a health result's `consumer_lag` detail within `readiness_max_lag`)."""
        return not self.not_ready_reasons()

    def health_check(self) -> HealthCheckResult:
        """The manager's own health: unhealthy when a fifth (at least one) of its daemons failed."""
        report = self.status_report()["summary"]
        total, failed = report["total"], report["failed"]
        details = {"daemons_total": total, "daemons_running": report["running"], "daemons_failed": failed}
        if total and failed >= max(1, 0.2 * total):
            return HealthCheckResult.unhealthy(f"High failure rate: {failed}/{total} daemons failed", **details)
        return HealthCheckResult.healthy("OK", **details)
