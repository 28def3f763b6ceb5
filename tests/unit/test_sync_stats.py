"""The facade's stats keys and its health thresholds at their boundaries: an error rate of 30 % or
more is degraded, 60 % or more unhealthy, in total and per backend."""

from __future__ import annotations

import pytest

from coordination.contracts import CoordinatorStatus
from coordination.sync_request import SyncBackend, SyncResponse
from coordination.sync_stats import SyncStats, status_for


def _record(stats: SyncStats, backend: SyncBackend, ok: int, failed: int, size: int = 100) -> None:
    for _ in range(ok):
        stats.record(SyncResponse(True, backend, nodes_synced=1, bytes_transferred=size))
    for _ in range(failed):
        stats.record(SyncResponse(False, backend, errors=["b: no answer"]))


@pytest.mark.parametrize(("errors", "syncs", "status"), [
    (0, 0, CoordinatorStatus.RUNNING), (0, 10, CoordinatorStatus.RUNNING),
    (29, 100, CoordinatorStatus.RUNNING), (30, 100, CoordinatorStatus.DEGRADED),
    (59, 100, CoordinatorStatus.DEGRADED), (60, 100, CoordinatorStatus.ERROR), (10, 10, CoordinatorStatus.ERROR),
])
def test_thresholds_at_their_boundaries(errors: int, syncs: int, status: CoordinatorStatus) -> None:
    assert status_for(errors, syncs)[0] is status


@pytest.mark.parametrize(("failed", "healthy", "status", "message"), [
    (2, True, "running", ""),
    (3, True, "degraded", "Elevated error rate: 30% of 10 syncs failed"),
    (5, True, "degraded", "Elevated error rate: 50% of 10 syncs failed"),
    (6, False, "error", "High error rate: 60% of 10 syncs failed"),
])
def test_health_check_from_the_error_rate(failed: int, healthy: bool, status: str, message: str) -> None:
    stats = SyncStats(backends_loaded=5)
    _record(stats, SyncBackend.ROUTER, 10 - failed, failed)
    result = stats.health_check()
    assert (result.healthy, result.status, result.message) == (healthy, status, message)
    assert result.details["operations_count"] == 10 and result.details["errors_count"] == failed
    assert result.details["backends_loaded"] == 5


def test_stats_keys_and_per_backend_counts() -> None:
    stats = SyncStats(backends_loaded=4)
    _record(stats, SyncBackend.AUTO_SYNC, 8, 0)
    _record(stats, SyncBackend.CLUSTER_SYNC, 1, 1)
    assert stats.get_stats() == {
        "total_syncs": 10, "by_backend": {"auto_sync": 8, "cluster_data_sync": 2}, "total_bytes": 900,
        "total_errors": 1, "backends_loaded": 4, "errors_by_backend": {"cluster_data_sync": 1},
        "bytes_by_backend": {"auto_sync": 800, "cluster_data_sync": 100}, "nodes_synced": 9}
    result = stats.health_check()
    assert result.status == "running"  # 10 % in total
    assert result.details["backends"] == {
        "auto_sync": {"syncs": 8, "errors": 0, "error_rate": 0.0, "status": "running"},
        "cluster_data_sync": {"syncs": 2, "errors": 1, "error_rate": 0.5, "status": "degraded"}}
    assert result.details["total_bytes_transferred"] == 900
    assert result.details["by_backend"] == {"auto_sync": 8, "cluster_data_sync": 2}


def test_no_syncs_is_healthy() -> None:
    result = SyncStats().health_check()
    assert result.healthy and result.status == "running" and result.details["error_rate"] == 0.0
