"""The two coordinators the bootstrap initialises last: the data pipeline and the curriculum.

The pipeline orchestrator follows each config through the pipeline's stages (selfplay, sync,
export, training, evaluation, promotion). With its `auto_trigger` setting (the bootstrap's
`pipeline_auto_trigger`) it drives the pipeline: a finished export (or NPZ combination) of a config
that is not training already becomes a TRAINING_REQUESTED carrying the training overrides
(`training_epochs`, `training_batch_size`, `training_model_version`, `training_data_path`,
`use_best_data`; the export's output_path when no data path is set).

The curriculum integration keeps each config's standing (rated, plateaued, rejected, advanced) and,
when a config plateaus or has a model rejected, publishes new curriculum weights
(CURRICULUM_REBALANCED): 1.5 for configs in trouble, 1.0 for the others, normalised to sum to 1.
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, FollowUp, On
from coordination.coordinators.rules import CONFIG, Change, Count, Latest, Track
from schemas.envelope import RouterEvent

__all__ = ["CurriculumIntegration", "PipelineOrchestrator"]

_OVERRIDES = {"training_epochs": "epochs", "training_batch_size": "batch_size",
              "training_model_version": "model_version", "training_data_path": "data_path",
              "use_best_data": "use_best_data"}
_NEEDS_ATTENTION = ("plateau", "rejected")
_BOOST = 1.5


def _request_training(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or change.before == "training":
        return []
    request = {"config_key": change.key, "reason": event.event_type.lower()}
    if event.payload.get("output_path"):
        request["data_path"] = event.payload["output_path"]
    for setting, field in _OVERRIDES.items():
        value = coordinator.settings[setting]
        if value is not None and value is not False:
            request[field] = value
    return [("TRAINING_REQUESTED", request)]


class PipelineOrchestrator(Coordinator):
    """Each config's pipeline stage; with auto_trigger, requests training after each export."""

    name = "pipeline_orchestrator"
    table = (
        On("SELFPLAY_COMPLETE", Track("configs", CONFIG, "selfplay_done")),
        On("NEW_GAMES_AVAILABLE", Track("configs", CONFIG, "games_available")),
        On("DATA_SYNC_COMPLETED", Track("configs", CONFIG, "synced", required=False)),
        On("CONSOLIDATION_COMPLETE", Track("configs", CONFIG, "consolidated")),
        On("NPZ_EXPORT_STARTED", Track("configs", CONFIG, "exporting")),
        On("NPZ_EXPORT_COMPLETE", Track("configs", CONFIG, "exported"), react=_request_training,
           requires="auto_trigger"),
        On("NPZ_COMBINATION_COMPLETE", Track("configs", CONFIG, "combined"), react=_request_training,
           requires="auto_trigger"),
        On("TRAINING_STARTED", Track("configs", CONFIG, "training")),
        On("TRAINING_COMPLETED", Track("configs", CONFIG, "trained")),
        On("TRAINING_FAILED", Track("configs", CONFIG, "training_failed")),
        On("EVALUATION_COMPLETED", Track("configs", CONFIG, "evaluated")),
        On("MODEL_PROMOTED", Track("configs", CONFIG, "promoted"), Count("iterations")),
        On("PROMOTION_REJECTED", Track("configs", CONFIG, "rejected")),
    )
    alarms = {"configs": ("training_failed",)}
    settings_defaults = {"auto_trigger": False, **{setting: None for setting in _OVERRIDES}, "use_best_data": False}


def _rebalance(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or not change.changed:
        return []
    configs = coordinator.view.entries("configs")
    raw = {c: _BOOST if entry["status"] in _NEEDS_ATTENTION else 1.0 for c, entry in configs.items()}
    total = sum(raw.values())
    weights = {c: round(w / total, 4) for c, w in raw.items()}
    return [("CURRICULUM_REBALANCED", {"weights": weights, "reason": event.event_type.lower(),
                                       "trigger_config": change.key})]


class CurriculumIntegration(Coordinator):
    """Each config's curriculum standing; rebalances the curriculum when one gets into trouble."""

    name = "curriculum_integration"
    table = (
        On("ELO_UPDATED", Track("configs", CONFIG, "rated")),
        On("ELO_VELOCITY_CHANGED", Track("configs", CONFIG, "rated")),
        On("MODEL_PROMOTED", Track("configs", CONFIG, "advancing")),
        On("PLATEAU_DETECTED", Track("configs", CONFIG, "plateau"), react=_rebalance),
        On("PROMOTION_REJECTED", Track("configs", CONFIG, "rejected"), react=_rebalance),
        On("CURRICULUM_ADVANCED", Track("configs", CONFIG, "advanced")),
        On("CURRICULUM_ROLLBACK", Track("configs", CONFIG, "rolled_back")),
        On("CURRICULUM_REBALANCED", Latest("weights"), Count("rebalances")),
    )
