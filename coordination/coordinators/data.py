"""Layers 3 and 4: sync, training, transfer verification, ephemeral data and the work queue's supply.

Reactions here: the sync coordinator triggers a sync when a config's data goes stale; the training
coordinator answers a TRAINING_REQUESTED for a config already training with TRAINING_SLOT_UNAVAILABLE;
the transfer verifier asks for a new transfer of data whose checksum failed or that arrived corrupted;
the ephemeral guard asks for an urgent sync of new games on a host and raises an alert when a host
holding unsynced games is terminated; the queue populator refills an exhausted work queue with
selfplay work for every config that has a target (unless the queue is under backpressure).
"""

from __future__ import annotations

import uuid

from coordination.coordinators.base import Coordinator, FollowUp, On, entering
from coordination.coordinators.rules import CONFIG, HOST, Change, Count, Flag, Latest, Track, payload_key
from schemas.envelope import RouterEvent

__all__ = ["EphemeralGuard", "QueuePopulator", "SyncCoordinator", "TrainingCoordinator", "TransferVerifier"]

SYNC = ("sync_id", "host", "node_id", "target_node", *CONFIG)
TRANSFER = ("transfer_id", "host", "node_id", "target_node", "model_path")


class SyncCoordinator(Coordinator):
    """Each sync's state, totals synced, and the freshness of each config's data."""

    name = "sync_coordinator"
    table = (
        On("DATA_SYNC_STARTED", Track("syncs", SYNC, "running"), Count("started")),
        On("DATA_SYNC_COMPLETED", Track("syncs", SYNC, "completed"), Count("games_synced", "games_synced"),
           Count("bytes_transferred", "bytes_transferred")),
        On("DATA_SYNC_FAILED", Track("syncs", SYNC, "failed"), Count("failures")),
        On("SYNC_STALLED", Track("syncs", SYNC, "stalled")),
        On("SYNC_CHECKSUM_FAILED", Track("syncs", SYNC, "checksum_failed")),
        On("SYNC_NODE_UNREACHABLE", Track("syncs", SYNC, "unreachable")),
        On("SYNC_REQUEST", Count("requests"), Latest("last_request")),
        On("SYNC_TRIGGERED", Count("triggered")),
        On("DATA_STALE", Track("configs", CONFIG, "stale"), react=entering("SYNC_TRIGGERED", "config_key")),
        On("DATA_FRESH", Track("configs", CONFIG, "fresh")),
    )
    alarms = {"syncs": ("stalled", "unreachable")}


def _refuse_when_running(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """One training run per config at a time."""
    config = payload_key(event, CONFIG)
    run = coordinator.view.entry("runs", config)
    if run is None or run["status"] != "running":
        return []
    return [("TRAINING_SLOT_UNAVAILABLE", {"config_key": config, "reason": "training already running",
                                           "running_since": run["updated_at"]})]


class TrainingCoordinator(Coordinator):
    """Each config's training run, from TRAINING_* events; one run per config."""

    name = "training_coordinator"
    table = (
        On("TRAINING_REQUESTED", Count("requests"), react=_refuse_when_running),
        On("TRAINING_STARTED", Track("runs", CONFIG, "running"), Count("started")),
        On("TRAINING_PROGRESS", Track("runs", CONFIG, "running")),
        On("TRAINING_HEARTBEAT", Track("runs", CONFIG, "running")),
        On("TRAINING_COMPLETED", Track("runs", CONFIG, "completed"), Count("completed")),
        On("TRAINING_FAILED", Track("runs", CONFIG, "failed"), Count("failed")),
        On("TRAINING_EARLY_STOPPED", Track("runs", CONFIG, "early_stopped")),
        On("TRAINING_TIMEOUT_REACHED", Track("runs", CONFIG, "timed_out")),
        On("TRAINING_PROCESS_KILLED", Track("runs", CONFIG, "killed")),
        On("TRAINING_ROLLBACK_NEEDED", Track("runs", CONFIG, "rollback_needed")),
        On("TRAINING_ROLLBACK_COMPLETED", Track("runs", CONFIG, "rolled_back")),
    )
    alarms = {"runs": ("timed_out", "rollback_needed")}


_retransfer = entering("SYNC_REQUEST", "host", unless=("checksum_failed", "corrupted"), priority="high")


class TransferVerifier(Coordinator):
    """Transfers received, failed verification, corrupted or repaired; re-requests bad ones."""

    name = "transfer_verifier"
    table = (
        On("DATA_SYNC_COMPLETED", Track("transfers", TRANSFER, "received")),
        On("MODEL_DISTRIBUTION_COMPLETE", Track("transfers", TRANSFER, "received")),
        On("SYNC_CHECKSUM_FAILED", Track("transfers", TRANSFER, "checksum_failed"), react=_retransfer),
        On("TRANSPORT_CORRUPTION_DETECTED", Track("transfers", TRANSFER, "corrupted"), react=_retransfer),
        On("REPAIR_COMPLETED", Track("transfers", TRANSFER, "repaired")),
        On("REPAIR_FAILED", Track("transfers", TRANSFER, "repair_failed")),
    )
    alarms = {"transfers": ("corrupted", "repair_failed")}


def _alert_on_lost_games(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or change.before != "unsynced":
        return []
    return [("HEALTH_ALERT", {"alert_type": "ephemeral_data_lost", "host": change.key, "severity": "warning",
                              "new_games": (change.previous or {}).get("new_games", 0)})]


class EphemeralGuard(Coordinator):
    """Which hosts hold games not yet synced off them; syncs them, alerts when such a host goes away."""

    name = "ephemeral_guard"
    table = (
        On("NEW_GAMES_AVAILABLE", Track("hosts", HOST, "unsynced"), Count("games_at_risk", "new_games"),
           react=entering("SYNC_REQUEST", "host", unless=("unsynced",), priority="high")),
        On("DATA_SYNC_COMPLETED", Track("hosts", HOST, "synced", required=False)),
        On("NODE_TERMINATED", Track("hosts", HOST, "terminated"), react=_alert_on_lost_games),
        On("NODE_RETIRED", Track("hosts", HOST, "retired"), react=_alert_on_lost_games),
    )


def _refill(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or not change.changed or coordinator.view.flag("backpressure"):
        return []
    follow_ups: list[FollowUp] = []
    for config, target in coordinator.view.entries("targets").items():
        extra = {k: target[k] for k in ("target_games", "games", "priority") if k in target}
        follow_ups.append(("WORK_QUEUED", {"work_id": str(uuid.uuid4()), "work_type": "selfplay",
                                           "config_key": config, **extra}))
    return follow_ups


class QueuePopulator(Coordinator):
    """Selfplay targets per config; refills the work queue when it runs dry."""

    name = "queue_populator"
    table = (
        On("SELFPLAY_TARGET_UPDATED", Track("targets", CONFIG, "active")),
        On("WORK_QUEUED", Count("queued"), Flag("queue_exhausted", False)),
        On("WORK_QUEUE_EXHAUSTED", Flag("queue_exhausted", True), react=_refill),
        On("WORK_QUEUE_BACKPRESSURE", Flag("backpressure", True)),
        On("WORK_QUEUE_BACKPRESSURE_RELEASED", Flag("backpressure", False)),
    )
    alarm_flags = ("queue_exhausted",)
