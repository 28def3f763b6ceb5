"""Layer 8: metrics analysis, optimisation, prioritised experience replay, leadership.

Reactions here: the metrics orchestrator reports a REGRESSION_DETECTED when a config's Elo drops
by `regression_elo_drop` (30) or more between two ratings; the optimisation coordinator starts a
CMA-ES run (CMAES_TRIGGERED) for a config that plateaued while no optimisation runs for it.
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, FollowUp, On
from coordination.coordinators.rules import CONFIG, Change, Count, Flag, Latest, Track
from schemas.envelope import RouterEvent

__all__ = ["LeadershipCoordinator", "MetricsOrchestrator", "OptimizationCoordinator", "PEROrchestrator"]

_OPTIMISING = ("plateau", "cmaes_running", "nas_running", "pbt_running")


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _detect_regression(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or change.previous is None:
        return []
    before, after = _number(change.previous.get("elo")), _number(event.payload.get("elo"))
    threshold = coordinator.settings["regression_elo_drop"]
    if before is None or after is None or before - after < threshold:
        return []
    drop = round(before - after, 2)
    severity = "minor" if drop < 2 * threshold else "moderate" if drop < 4 * threshold else "severe"
    return [("REGRESSION_DETECTED", {"config_key": change.key, "elo_before": before, "elo_after": after,
                                     "elo_drop": drop, "severity": severity})]


class MetricsOrchestrator(Coordinator):
    """Training metrics and Elo per config; detects Elo regressions."""

    name = "metrics_orchestrator"
    table = (
        On("TRAINING_PROGRESS", Track("training", CONFIG, "training")),
        On("TRAINING_LOSS_ANOMALY", Track("training", CONFIG, "loss_anomaly"), Count("loss_anomalies")),
        On("TRAINING_COMPLETED", Track("training", CONFIG, "completed")),
        On("TRAINING_LOSS_TREND", Latest("loss_trend")),
        On("ELO_UPDATED", Track("elo", CONFIG, "rated"), react=_detect_regression),
        On("REGRESSION_DETECTED", Track("regressions", CONFIG, "detected"), Count("regressions")),
        On("REGRESSION_CLEARED", Track("regressions", CONFIG, "cleared")),
        On("PLATEAU_DETECTED", Count("plateaus"), Latest("last_plateau")),
        On("METRICS_UPDATED", Count("metrics_updates"), Latest("metrics")),
    )
    alarms = {"regressions": ("detected",), "training": ("loss_anomaly",)}
    settings_defaults = {"regression_elo_drop": 30.0}


def _start_cmaes(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or change.before in _OPTIMISING:
        return []
    return [("CMAES_TRIGGERED", {"config_key": change.key, "reason": "plateau_detected"})]


class OptimizationCoordinator(Coordinator):
    """Hyper-parameter and architecture searches per config; starts CMA-ES on a plateau."""

    name = "optimization_coordinator"
    table = (
        On("PLATEAU_DETECTED", Track("configs", CONFIG, "plateau"), react=_start_cmaes),
        On("CMAES_TRIGGERED", Track("configs", CONFIG, "cmaes_running")),
        On("CMAES_COMPLETED", Track("configs", CONFIG, "optimized")),
        On("NAS_TRIGGERED", Track("configs", CONFIG, "nas_running")),
        On("NAS_STARTED", Track("configs", CONFIG, "nas_running")),
        On("NAS_COMPLETED", Track("configs", CONFIG, "optimized")),
        On("NAS_BEST_ARCHITECTURE", Latest("best_architecture")),
        On("PBT_STARTED", Track("configs", CONFIG, "pbt_running")),
        On("PBT_COMPLETED", Track("configs", CONFIG, "optimized")),
        On("HYPERPARAMETER_UPDATED", Track("configs", CONFIG, "tuned")),
    )


class PEROrchestrator(Coordinator):
    """Which configs' replay buffers are fresh and which are stale (new data exported since)."""

    name = "per_orchestrator"
    table = (
        On("PER_BUFFER_REBUILT", Track("buffers", CONFIG, "fresh"), Count("rebuilds")),
        On("PER_PRIORITIES_UPDATED", Track("buffers", CONFIG, "fresh")),
        On("NPZ_EXPORT_COMPLETE", Track("buffers", CONFIG, "stale")),
    )


class LeadershipCoordinator(Coordinator):
    """The cluster's leader, elections, and leaderless or split-brain periods."""

    name = "leadership_coordinator"
    table = (
        On("LEADER_ELECTED", Latest("leader"), Flag("leaderless", False), Count("elections")),
        On("LEADER_LOST", Flag("leaderless", True), Latest("last_leader_lost")),
        On("LEADER_STEPDOWN", Flag("leaderless", True), Latest("last_leader_lost")),
        On("LEADER_LEASE_EXPIRED", Flag("leaderless", True), Latest("last_leader_lost")),
        On("LEADER_HEARTBEAT_MISSING", Count("missed_heartbeats")),
        On("SPLIT_BRAIN_DETECTED", Flag("split_brain", True)),
        On("SPLIT_BRAIN_RESOLVED", Flag("split_brain", False)),
    )
    alarm_flags = ("leaderless", "split_brain")
