"""Layer 7, the automation coordinators: export, evaluation, model distribution, idle resources,
data quality, orphaned games, training activity.

Reactions here: the evaluation coordinator requests the evaluation of each newly trained model
(EVALUATION_REQUESTED, once per model); the distribution coordinator raises a HEALTH_ALERT when a
model's distribution fails; the quality monitor blocks training for a config whose data quality
turned low or degraded (TRAINING_BLOCKED_BY_QUALITY); the orphan detector asks for a recovery sync
of a database found holding orphaned games.
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, FollowUp, On, entering
from coordination.coordinators.rules import CONFIG, MODEL, NODE, Change, Count, Flag, Latest, Track
from schemas.envelope import RouterEvent

__all__ = ["AutoExportCoordinator", "EvaluationCoordinator", "IdleResourceCoordinator",
           "ModelDistributionCoordinator", "OrphanDetectionCoordinator", "QualityMonitorCoordinator",
           "TrainingActivityCoordinator"]

DATABASE = ("db_path", "path", "database")
ACTIVITY = ("node_id", "host", *CONFIG)
_TRAINING_ENDED = ("TRAINING_COMPLETED", "TRAINING_FAILED", "TRAINING_TIMEOUT_REACHED", "TRAINING_PROCESS_KILLED",
                   "TRAINING_EARLY_STOPPED")


class AutoExportCoordinator(Coordinator):
    """Per config: games waiting for export, exports running, done or failed; totals."""

    name = "auto_export_daemon"
    table = (
        On("NEW_GAMES_AVAILABLE", Track("configs", CONFIG, "games_pending"), Count("new_games", "new_games")),
        On("CONSOLIDATION_COMPLETE", Track("configs", CONFIG, "consolidated")),
        On("NPZ_EXPORT_STARTED", Track("configs", CONFIG, "exporting")),
        On("NPZ_EXPORT_COMPLETE", Track("configs", CONFIG, "exported"), Count("samples_exported", "samples_exported")),
        On("EXPORT_VALIDATION_FAILED", Track("configs", CONFIG, "export_failed")),
    )
    alarms = {"configs": ("export_failed",)}


def _request_evaluation(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """Each successfully trained model is evaluated once."""
    payload = event.payload
    model = {f: payload[f] for f in MODEL if payload.get(f)}
    if not model or payload.get("success") is False:
        return []
    key = str(payload.get("model_id") or payload.get("model_path"))
    if coordinator.view.entry("evaluations", key) is not None:
        return []
    config = {f: payload[f] for f in CONFIG if payload.get(f)}
    return [("EVALUATION_REQUESTED", {**model, **config, "reason": "training_completed"})]


class EvaluationCoordinator(Coordinator):
    """Each model's evaluation, from request to result; evaluation backpressure."""

    name = "evaluation_daemon"
    table = (
        On("TRAINING_COMPLETED", react=_request_evaluation),
        On("EVALUATION_REQUESTED", Track("evaluations", MODEL, "requested")),
        On("EVALUATION_QUEUED", Track("evaluations", MODEL, "queued")),
        On("EVALUATION_STARTED", Track("evaluations", MODEL, "running")),
        On("EVALUATION_PROGRESS", Track("evaluations", MODEL, "running")),
        On("EVALUATION_RECOVERED", Track("evaluations", MODEL, "running")),
        On("EVALUATION_COMPLETED", Track("evaluations", MODEL, "completed"), Count("completed")),
        On("EVALUATION_FAILED", Track("evaluations", MODEL, "failed"), Count("failed")),
        On("EVALUATION_STUCK", Track("evaluations", MODEL, "stuck")),
        On("EVALUATION_BACKPRESSURE", Flag("backpressure", True)),
        On("EVALUATION_BACKPRESSURE_RELEASED", Flag("backpressure", False)),
    )
    alarms = {"evaluations": ("stuck",)}
    alarm_flags = ("backpressure",)


def _alert_distribution_failed(coordinator: Coordinator, event: RouterEvent,
                               change: Change | None) -> list[FollowUp]:
    payload = event.payload
    return [("HEALTH_ALERT", {"alert_type": "model_distribution_failed", "severity": "warning",
                              "model_path": payload.get("model_path", change.key if change else ""),
                              "error": payload.get("error", ""), "failed_nodes": payload.get("failed_nodes", [])})]


class ModelDistributionCoordinator(Coordinator):
    """Where each promoted model is in its distribution to the cluster."""

    name = "model_distribution_daemon"
    table = (
        On("MODEL_PROMOTED", Track("distributions", MODEL, "pending")),
        On("MODEL_DISTRIBUTION_STARTED", Track("distributions", MODEL, "distributing")),
        On("MODEL_DISTRIBUTION_COMPLETE", Track("distributions", MODEL, "distributed")),
        On("MODEL_DISTRIBUTION_FAILED", Track("distributions", MODEL, "failed"), react=_alert_distribution_failed),
        On("DISTRIBUTION_INCOMPLETE", Track("distributions", MODEL, "incomplete")),
        On("MODEL_SYNC_REQUESTED", Count("sync_requests")),
        On("P2P_MODEL_SYNCED", Count("node_syncs")),
    )
    alarms = {"distributions": ("failed", "incomplete")}


class IdleResourceCoordinator(Coordinator):
    """Idle and busy nodes, and whether the cluster is underused."""

    name = "idle_resource_daemon"
    table = (
        On("IDLE_RESOURCE_DETECTED", Track("nodes", NODE, "idle")),
        On("IDLE_NODE_WORK_INJECTED", Track("nodes", NODE, "busy"), Count("work_injected")),
        On("TASK_SPAWNED", Track("nodes", NODE, "busy", required=False)),
        On("CLUSTER_UNDERUTILIZED", Flag("underutilized", True), Latest("utilization")),
        On("CLUSTER_UTILIZATION_RECOVERED", Flag("underutilized", False), Latest("utilization")),
    )
    alarm_flags = ("underutilized",)


_block_training = entering("TRAINING_BLOCKED_BY_QUALITY", "config_key", unless=("low_quality", "degraded"))


class QualityMonitorCoordinator(Coordinator):
    """The data quality of each config; blocks training on bad data."""

    name = "quality_monitor_daemon"
    table = (
        On("QUALITY_SCORE_UPDATED", Track("configs", CONFIG, "scored")),
        On("HIGH_QUALITY_DATA_AVAILABLE", Track("configs", CONFIG, "high_quality")),
        On("LOW_QUALITY_DATA_WARNING", Track("configs", CONFIG, "low_quality"), react=_block_training),
        On("QUALITY_DEGRADED", Track("configs", CONFIG, "degraded"), react=_block_training),
        On("QUALITY_CHECK_FAILED", Track("configs", CONFIG, "check_failed")),
        On("TRAINING_BLOCKED_BY_QUALITY", Count("training_blocks")),
    )
    alarms = {"configs": ("low_quality", "degraded")}


class OrphanDetectionCoordinator(Coordinator):
    """Game databases: created, found with orphaned games, registered."""

    name = "orphan_detection_daemon"
    table = (
        On("DATABASE_CREATED", Track("databases", DATABASE, "unregistered")),
        On("ORPHAN_GAMES_DETECTED", Track("databases", DATABASE, "orphaned"),
           Count("orphan_games", ("orphan_count", "game_count", "games")),
           react=entering("SYNC_REQUEST", "db_path", unless=("orphaned",), priority="high")),
        On("ORPHAN_GAMES_REGISTERED", Track("databases", DATABASE, "registered")),
        On("GAME_SAVE_FAILED", Count("save_failures")),
        On("ORPHAN_GAME_PREVENTED", Count("orphans_prevented")),
    )
    alarms = {"databases": ("orphaned",)}


class TrainingActivityCoordinator(Coordinator):
    """Where training is going on right now (per node, else per config)."""

    name = "training_activity"
    table = (
        On("TRAINING_STARTED", Track("activity", ACTIVITY, "training"), Count("runs_started")),
        On("TRAINING_HEARTBEAT", Track("activity", ACTIVITY, "training")),
        On("TRAINING_PROGRESS", Track("activity", ACTIVITY, "training")),
        *(On(ended, Track("activity", ACTIVITY, "idle")) for ended in _TRAINING_ENDED),
    )
