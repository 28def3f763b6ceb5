"""The sync facade's counters, `get_stats()` and `health_check()`, in total and per backend.

    stats = SyncStats(backends_loaded=5)
    stats.record(response)                     # after each sync
    stats.get_stats()   # {"total_syncs", "by_backend", "total_bytes", "total_errors", "backends_loaded", ...}
    stats.health_check()                       # HealthCheckResult

A sync counts once (`total_syncs`), under the backend that handled it; it is an error when its
response is not successful. Health, from the error rate (errors / syncs), per backend and in total:
an error rate of 60 % or more is unhealthy (status ERROR), 30 % or more is DEGRADED (still healthy),
below that RUNNING. Backends are keyed by their value everywhere (`"cluster_data_sync"`): the
original mixed names and values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from coordination.contracts import CoordinatorStatus
from coordination.protocols import HealthCheckResult
from coordination.sync_request import SyncResponse

__all__ = ["DEGRADED_ERROR_RATE", "UNHEALTHY_ERROR_RATE", "SyncStats", "status_for"]

DEGRADED_ERROR_RATE = 0.3
UNHEALTHY_ERROR_RATE = 0.6


def status_for(errors: int, syncs: int) -> tuple[CoordinatorStatus, str]:
    """(status, message) for an error count out of `syncs` syncs."""
    rate = errors / syncs if syncs else 0.0
    if rate >= UNHEALTHY_ERROR_RATE:
        return CoordinatorStatus.ERROR, f"High error rate: {rate:.0%} of {syncs} syncs failed"
    if rate >= DEGRADED_ERROR_RATE:
        return CoordinatorStatus.DEGRADED, f"Elevated error rate: {rate:.0%} of {syncs} syncs failed"
    return CoordinatorStatus.RUNNING, ""


@dataclass
class SyncStats:
    backends_loaded: int = 0
    syncs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    nodes_synced: int = 0

    def record(self, response: SyncResponse) -> None:
        backend = response.backend_used.value
        self.syncs[backend] += 1
        self.bytes[backend] += response.bytes_transferred
        self.nodes_synced += response.nodes_synced
        if not response.success:
            self.errors[backend] += 1

    def get_stats(self) -> dict[str, object]:
        return {"total_syncs": sum(self.syncs.values()), "by_backend": dict(self.syncs),
                "total_bytes": sum(self.bytes.values()), "total_errors": sum(self.errors.values()),
                "backends_loaded": self.backends_loaded, "errors_by_backend": dict(self.errors),
                "bytes_by_backend": dict(self.bytes), "nodes_synced": self.nodes_synced}

    def health_check(self) -> HealthCheckResult:
        syncs, errors = sum(self.syncs.values()), sum(self.errors.values())
        status, message = status_for(errors, syncs)
        per_backend = {}
        for backend, count in self.syncs.items():
            backend_status, _ = status_for(self.errors[backend], count)
            per_backend[backend] = {"syncs": count, "errors": self.errors[backend],
                                    "error_rate": round(self.errors[backend] / count, 4),
                                    "status": backend_status.value}
        details = {"operations_count": syncs, "errors_count": errors,
                   "error_rate": round(errors / syncs, 4) if syncs else 0.0,
                   "backends_loaded": self.backends_loaded, "total_bytes_transferred": sum(self.bytes.values()),
                   "by_backend": dict(self.syncs), "backends": per_backend}
        if status is CoordinatorStatus.ERROR:
            return HealthCheckResult.unhealthy(message, **details)  # type: ignore[attr-defined,no-any-return]
        if status is CoordinatorStatus.DEGRADED:
            return HealthCheckResult.degraded(message, **details)  # type: ignore[attr-defined,no-any-return]
        return HealthCheckResult.healthy(message, **details)  # type: ignore[call-arg,no-any-return,arg-type]
