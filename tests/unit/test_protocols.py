"""HealthCheckResult and CoordinatorStatus: shape, constructors, from_metrics, score, with_details."""

from __future__ import annotations

import dataclasses
import json

import pytest

from coordination.contracts import CoordinatorStatus
from coordination.protocols import Daemon, HealthCheckable, HealthCheckResult, StoppableDaemon


def test_coordinator_status_has_the_catalogs_ten_values() -> None:
    catalog = json.load(open("schemas/data/catalog.json"))
    assert [s.value for s in CoordinatorStatus] == catalog["coordinator_status_values"]
    assert CoordinatorStatus.RUNNING == "running" and str(CoordinatorStatus.DEGRADED) == "degraded"


def test_defaults_and_to_dict() -> None:
    result = HealthCheckResult(healthy=True)
    assert result.status is CoordinatorStatus.RUNNING and result.message == "" and result.details == {}
    assert result.timestamp > 0
    assert result.to_dict() == {"healthy": True, "status": "running", "message": "",
                                "timestamp": result.timestamp, "details": {}}
    assert [f.name for f in dataclasses.fields(HealthCheckResult)] == [
        "healthy", "status", "message", "timestamp", "details"]
    with pytest.raises(TypeError):
        HealthCheckResult()  # type: ignore[call-arg]


def test_constructors() -> None:
    ok = HealthCheckResult.healthy("fine", cycles=3)
    assert (ok.healthy, ok.status, ok.message, ok.details) == (True, CoordinatorStatus.RUNNING, "fine", {"cycles": 3})
    bad = HealthCheckResult.unhealthy("broken", errors=2)
    assert (bad.healthy, bad.status, bad.details) == (False, CoordinatorStatus.ERROR, {"errors": 2})
    meh = HealthCheckResult.degraded("slow")
    assert (meh.healthy, meh.status) == (True, CoordinatorStatus.DEGRADED)
    assert HealthCheckResult.healthy().message == ""


@pytest.mark.parametrize(("kwargs", "healthy", "status", "message"), [
    ({"events_processed": 100, "errors_count": 11}, False, CoordinatorStatus.ERROR, "High error rate: 11.0% > 10.0%"),
    ({"events_processed": 100, "errors_count": 10}, True, CoordinatorStatus.DEGRADED, "Elevated error rate: 10.0%"),
    ({"events_processed": 100, "errors_count": 6}, True, CoordinatorStatus.DEGRADED, "Elevated error rate: 6.0%"),
    ({"events_processed": 100, "errors_count": 5}, True, CoordinatorStatus.RUNNING, "OK"),
    ({"last_activity_ago": 301.0}, True, CoordinatorStatus.DEGRADED, "Inactive for 301s (max: 300s)"),
    ({"last_activity_ago": 300.0}, True, CoordinatorStatus.RUNNING, "OK"),
    ({"error_rate": 0.2, "last_activity_ago": 999.0}, False, CoordinatorStatus.ERROR, "High error rate: 20.0% > 10.0%"),
    ({}, True, CoordinatorStatus.RUNNING, "OK"),
])
def test_from_metrics_boundaries(kwargs: dict, healthy: bool, status: CoordinatorStatus, message: str) -> None:
    result = HealthCheckResult.from_metrics(60.0, **kwargs)
    assert (result.healthy, result.status, result.message) == (healthy, status, message)


def test_from_metrics_details() -> None:
    result = HealthCheckResult.from_metrics(5.0, 3, 1, last_activity_ago=2.0, queue=7)
    assert result.details == {"uptime_seconds": 5.0, "events_processed": 3, "errors_count": 1,
                              "error_rate": 0.3333, "queue": 7, "last_activity_ago": 2.0}
    assert "last_activity_ago" not in HealthCheckResult.from_metrics(5.0).details


@pytest.mark.parametrize(("status", "score"), [
    (CoordinatorStatus.ERROR, 0.1), (CoordinatorStatus.DEGRADED, 0.7), (CoordinatorStatus.RUNNING, 1.0),
    (CoordinatorStatus.READY, 1.0), (CoordinatorStatus.PAUSED, 0.5), (CoordinatorStatus.DRAINING, 0.6),
    (CoordinatorStatus.STOPPING, 0.3), (CoordinatorStatus.STOPPED, 0.0), (CoordinatorStatus.INITIALIZING, 0.8),
    (CoordinatorStatus.STARTING, 0.5),
])
def test_health_score(status: CoordinatorStatus, score: float) -> None:
    assert HealthCheckResult(True, status).health_score() == score
    assert HealthCheckResult(False, status).health_score() == 0.0


def test_with_details_returns_a_merged_copy() -> None:
    base = HealthCheckResult.healthy("ok", a=1, b=2)
    merged = base.with_details(b=3, c=4)
    assert merged.details == {"a": 1, "b": 3, "c": 4} and base.details == {"a": 1, "b": 2}
    assert (merged.timestamp, merged.message, merged.status) == (base.timestamp, "ok", base.status)


def test_daemon_protocols_are_structural() -> None:
    class Plain:
        async def run(self) -> None: ...

    class Full(Plain):
        async def stop(self) -> None: ...

        def health_check(self) -> bool:
            return True

    assert isinstance(Plain(), Daemon) and not isinstance(Plain(), StoppableDaemon)
    assert isinstance(Full(), StoppableDaemon) and isinstance(Full(), HealthCheckable)
