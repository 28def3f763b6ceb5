"""The health-check result every coordinator and daemon returns, and the daemon protocols.

    def health_check(self) -> HealthCheckResult:
        if self._errors > self._cycles * 0.5:
            return HealthCheckResult.unhealthy("High error rate", errors=self._errors)
        return HealthCheckResult.healthy("OK", cycles=self._cycles)

`HealthCheckResult` keeps the original's shape and numbers (ORIGINAL_SEMANTICS section 11):
`healthy`, `status` (RUNNING), `message` (""), `timestamp` (now), `details` ({}); the constructors
`healthy()` (RUNNING), `unhealthy()` (ERROR, not healthy) and `degraded()` (DEGRADED, still
healthy); `from_metrics()`, `health_score()` and `with_details()`.

`healthy` is both a field and a class-level constructor, as in the original: on an instance it is
the bool, on the class it is the constructor. The constructors are attached after the dataclass is
built, so the field stays required (the original gave it a classmethod as an accidental default).

`HealthCheckable` and `Daemon` describe what the daemon manager accepts from a factory: an object
with `async run()` (runs until the daemon ends), optionally `health_check()` (sync or async,
returning a `HealthCheckResult`, a dict or a bool) and `async stop()` (asks `run()` to return).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from coordination.contracts import CoordinatorStatus

__all__ = ["Daemon", "HealthCheckResult", "HealthCheckable", "StoppableDaemon"]

_SCORES: dict[CoordinatorStatus, float] = {
    CoordinatorStatus.ERROR: 0.1,
    CoordinatorStatus.DEGRADED: 0.7,
    CoordinatorStatus.RUNNING: 1.0,
    CoordinatorStatus.READY: 1.0,
    CoordinatorStatus.PAUSED: 0.5,
    CoordinatorStatus.DRAINING: 0.6,
    CoordinatorStatus.STOPPING: 0.3,
    CoordinatorStatus.STOPPED: 0.0,
    CoordinatorStatus.INITIALIZING: 0.8,
}
_UNKNOWN_STATUS_SCORE = 0.5


@dataclass
class HealthCheckResult:
    """The outcome of one health check."""

    healthy: bool
    status: CoordinatorStatus = CoordinatorStatus.RUNNING
    message: str = ""
    timestamp: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        status = self.status.value if isinstance(self.status, CoordinatorStatus) else str(self.status)
        return {"healthy": self.healthy, "status": status, "message": self.message,
                "timestamp": self.timestamp, "details": self.details}

    @classmethod
    def from_metrics(cls, uptime_seconds: float, events_processed: int = 0, errors_count: int = 0,
                     error_rate: float | None = None, last_activity_ago: float | None = None,
                     max_inactivity_seconds: float = 300.0, max_error_rate: float = 0.1,
                     **extra_details: Any) -> HealthCheckResult:
        """Judge a component by its counters: error rate above `max_error_rate` is ERROR (unhealthy);
        inactive longer than `max_inactivity_seconds` or error rate above half the maximum is
        DEGRADED (still healthy); otherwise RUNNING "OK". All comparisons are strict (>)."""
        if error_rate is None:
            error_rate = errors_count / events_processed if events_processed > 0 else 0.0
        details: dict[str, Any] = {"uptime_seconds": uptime_seconds, "events_processed": events_processed,
                                   "errors_count": errors_count, "error_rate": round(error_rate, 4),
                                   **extra_details}
        if last_activity_ago is not None:
            details["last_activity_ago"] = last_activity_ago
        if error_rate > max_error_rate:
            return cls(False, CoordinatorStatus.ERROR,
                       f"High error rate: {error_rate:.1%} > {max_error_rate:.1%}", details=details)
        if last_activity_ago is not None and last_activity_ago > max_inactivity_seconds:
            return cls(True, CoordinatorStatus.DEGRADED,
                       f"Inactive for {last_activity_ago:.0f}s (max: {max_inactivity_seconds:.0f}s)",
                       details=details)
        if error_rate > max_error_rate / 2:
            return cls(True, CoordinatorStatus.DEGRADED, f"Elevated error rate: {error_rate:.1%}",
                       details=details)
        return cls(True, CoordinatorStatus.RUNNING, "OK", details=details)

    def health_score(self) -> float:
        """0.0 (dead) .. 1.0 (perfect): 0 when unhealthy, else by status (unknown status: 0.5)."""
        if not self.healthy:
            return 0.0
        return _SCORES.get(self.status, _UNKNOWN_STATUS_SCORE)  # type: ignore[call-overload]

    def with_details(self, **extra_details: Any) -> HealthCheckResult:
        """A copy with `extra_details` merged over the details (same timestamp)."""
        return HealthCheckResult(self.healthy, self.status, self.message, self.timestamp,
                                 {**self.details, **extra_details})


def _healthy(cls: type[HealthCheckResult], message: str = "", **details: Any) -> HealthCheckResult:
    """A healthy, RUNNING result."""
    return cls(True, CoordinatorStatus.RUNNING, message, details=details)


def _unhealthy(cls: type[HealthCheckResult], message: str, **details: Any) -> HealthCheckResult:
    """An unhealthy result with status ERROR."""
    return cls(False, CoordinatorStatus.ERROR, message, details=details)


def _degraded(cls: type[HealthCheckResult], message: str, **details: Any) -> HealthCheckResult:
    """A DEGRADED result that is still healthy (operational)."""
    return cls(True, CoordinatorStatus.DEGRADED, message, details=details)


HealthCheckResult.healthy = classmethod(_healthy)  # type: ignore[assignment,method-assign]
HealthCheckResult.unhealthy = classmethod(_unhealthy)  # type: ignore[attr-defined]
HealthCheckResult.degraded = classmethod(_degraded)  # type: ignore[attr-defined]


@runtime_checkable
class HealthCheckable(Protocol):
    """Anything with a health check; the result may be a HealthCheckResult, dict or bool, or an
    awaitable of one."""

    def health_check(self) -> HealthCheckResult | dict[str, Any] | bool | Awaitable[Any]: ...


@runtime_checkable
class Daemon(Protocol):
    """What a daemon factory may return: an object whose `run()` runs the daemon until it ends.
    `run()` returning means the daemon finished; raising means it failed (and is restarted)."""

    async def run(self) -> None: ...


@runtime_checkable
class StoppableDaemon(Daemon, Protocol):
    """A daemon that can be asked to stop: `stop()` makes `run()` return soon after."""

    async def stop(self) -> None: ...
