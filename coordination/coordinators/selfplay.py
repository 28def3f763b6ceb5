"""Layers 5 and 6: selfplay orchestration and scheduling, cloud providers' nodes, job placement.

Reactions here: the selfplay orchestrator announces NEW_GAMES_AVAILABLE for a finished selfplay
batch that produced games; the scheduler turns curriculum weights (CURRICULUM_REBALANCED) into a
selfplay allocation (SELFPLAY_ALLOCATION_UPDATED, shares summing to 1); the job scheduler marks the
jobs running on a host that went offline or died as orphaned (TASK_ORPHANED), for migration.
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, FollowUp, On
from coordination.coordinators.rules import (
    CONFIG,
    NODE,
    TASK,
    Change,
    Count,
    Flag,
    Latest,
    MalformedEvent,
    Track,
    payload_key,
)
from schemas.envelope import RouterEvent

__all__ = ["JobScheduler", "MultiProviderOrchestrator", "SelfplayOrchestrator", "SelfplayScheduler"]

BATCH = (*TASK, "node_id", *CONFIG)
_GAMES = ("games_generated", "games_played")


def _announce_games(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    payload = event.payload
    games = next((payload[f] for f in _GAMES if isinstance(payload.get(f), int) and payload[f] > 0), 0)
    if not games or payload.get("success") is False:
        return []
    announcement = {"config_key": payload_key(event, CONFIG), "new_games": games, "source_batch": change.key
                    if change else ""}
    host = payload.get("node_id") or payload.get("host")
    if host:
        announcement["host"] = host
    if payload.get("db_path"):
        announcement["db_path"] = payload["db_path"]
    return [("NEW_GAMES_AVAILABLE", announcement)]


class SelfplayOrchestrator(Coordinator):
    """Selfplay batches and the games they produced."""

    name = "selfplay_orchestrator"
    table = (
        On("SELFPLAY_COMPLETE", Track("batches", BATCH, "completed"), Count("batches"), Count("games", _GAMES),
           react=_announce_games),
        On("SELFPLAY_RATE_CHANGED", Latest("rate")),
        On("P2P_SELFPLAY_SCALED", Latest("scaling")),
        On("QUALITY_SELFPLAY_DISPATCHED", Count("quality_dispatches")),
    )


def _allocate(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """Curriculum weights -> selfplay shares (each weight over their sum)."""
    weights = event.payload.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise MalformedEvent(f"CURRICULUM_REBALANCED event {event.event_id or '?'} has no weights object")
    bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, int | float) or v < 0}
    if bad or not sum(weights.values()):
        raise MalformedEvent(f"CURRICULUM_REBALANCED event {event.event_id or '?'}: weights must be numbers >= 0 "
                             f"with a positive sum, got {weights!r}")
    total = sum(weights.values())
    shares = {config: round(weight / total, 4) for config, weight in weights.items()}
    return [("SELFPLAY_ALLOCATION_UPDATED", {"allocation": shares, "reason": "curriculum_rebalanced",
                                             "throttled": coordinator.view.flag("throttled")})]


class SelfplayScheduler(Coordinator):
    """Selfplay allocation and targets per config, exploration boosts, throttling."""

    name = "selfplay_scheduler"
    table = (
        On("CURRICULUM_REBALANCED", Latest("curriculum"), react=_allocate),
        On("SELFPLAY_ALLOCATION_UPDATED", Latest("allocation")),
        On("SELFPLAY_TARGET_UPDATED", Track("targets", CONFIG, "active")),
        On("EXPLORATION_BOOST", Track("exploration", CONFIG, "boosted")),
        On("EXPLORATION_ADJUSTED", Track("exploration", CONFIG, "adjusted")),
        On("BACKPRESSURE_ACTIVATED", Flag("throttled", True)),
        On("BACKPRESSURE_RELEASED", Flag("throttled", False)),
        On("EVALUATION_BACKPRESSURE", Flag("evaluation_backpressure", True)),
        On("EVALUATION_BACKPRESSURE_RELEASED", Flag("evaluation_backpressure", False)),
    )


class MultiProviderOrchestrator(Coordinator):
    """Nodes provisioned from the providers, their lifecycle, and the budget."""

    name = "multi_provider"
    table = (
        On("NODE_PROVISIONED", Track("nodes", NODE, "provisioned")),
        On("NODE_ACTIVATED", Track("nodes", NODE, "active")),
        On("NODE_PROVISION_FAILED", Track("nodes", NODE, "provision_failed", required=False),
           Count("provision_failures")),
        On("NODE_RETIRED", Track("nodes", NODE, "retired")),
        On("NODE_TERMINATED", Track("nodes", NODE, "terminated")),
        On("BUDGET_ALERT", Latest("budget")),
        On("BUDGET_EXCEEDED", Flag("budget_exceeded", True), Latest("budget")),
    )
    alarm_flags = ("budget_exceeded",)


def _orphan_jobs(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """The jobs still running on a host that just went down are orphaned (to be migrated)."""
    if change is None or not change.changed:
        return []
    return [("TASK_ORPHANED", {"task_id": job, "node_id": change.key, "reason": event.event_type.lower(),
                               "task_type": entry.get("task_type", "")})
            for job, entry in coordinator.view.entries("jobs").items()
            if entry["status"] == "running" and change.key in (entry.get("node_id"), entry.get("host"))]


class JobScheduler(Coordinator):
    """Where each job runs; orphans the jobs of a host that went down."""

    name = "job_scheduler"
    table = (
        On("TASK_SPAWNED", Track("jobs", TASK, "running")),
        On("TASK_COMPLETED", Track("jobs", TASK, "completed")),
        On("TASK_FAILED", Track("jobs", TASK, "failed")),
        On("TASK_CANCELLED", Track("jobs", TASK, "cancelled")),
        On("TASK_ORPHANED", Track("jobs", TASK, "orphaned")),
        On("JOB_PREEMPTED", Track("jobs", TASK, "preempted")),
        On("HOST_OFFLINE", Track("hosts", NODE, "down"), react=_orphan_jobs),
        On("P2P_NODE_DEAD", Track("hosts", NODE, "down"), react=_orphan_jobs),
        On("HOST_ONLINE", Track("hosts", NODE, "up")),
    )
