"""Typed payloads of the main events, and ``validate_payload`` to check a payload dict against them.

A payload travels as a plain JSON object; these Structs say what the main events carry, with the
original system's field names (``config``/``config_key``, ``games_synced``, ``model_path``...).
Its emitters were not consistent (some send ``config``, others ``config_key``; ``games_played``
and ``games_generated`` for selfplay), so the Structs accept both spellings rather than pick one.

Rules for evolving a payload (publishers and consumers upgrade at different times):

* a new field always gets a default, so an old publisher's payload still validates;
* never retype, rename or reuse a field: add a new one and leave the old one be;
* unknown keys are ignored, never rejected, so a new publisher's payload validates for an old
  consumer. They are not kept in the Struct: the event's payload dict stays the source of truth.

Validation converts leniently (``strict=False``): ``"150"`` is accepted for an int field, ``1``
for a float field; a value of the wrong kind (``"lots"`` for an int) raises ``PayloadValidationError``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from schemas.events import EventTypeLike, normalize_event_type

__all__ = [
    "PAYLOAD_TYPES",
    "DaemonStarted",
    "DaemonStatusChanged",
    "DaemonStopped",
    "DataSyncCompleted",
    "DataSyncFailed",
    "DataSyncStarted",
    "EvaluationCompleted",
    "EventPayload",
    "HostOffline",
    "ModelDistributionComplete",
    "ModelPromoted",
    "NewGamesAvailable",
    "NodeRecovered",
    "NpzExportComplete",
    "PayloadValidationError",
    "PromotionFailed",
    "SelfplayComplete",
    "TrainingCompleted",
    "TrainingFailed",
    "TrainingStarted",
    "validate_payload",
]


class EventPayload(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Base of the typed payloads: keyword-only, unknown keys ignored."""


class _ConfigPayload(EventPayload, kw_only=True):
    """Fields naming the board configuration an event is about (``config_key`` = ``hex8_2p``)."""

    config: str = ""
    config_key: str = ""
    board_type: str = ""
    num_players: int = 0


class TrainingStarted(_ConfigPayload, kw_only=True):
    """TRAINING_STARTED: a training run began."""

    model_path: str | None = None
    job_id: str = ""
    model_version: str = ""


class TrainingCompleted(_ConfigPayload, kw_only=True):
    """TRAINING_COMPLETED: a training run finished and (usually) saved a model."""

    success: bool = True
    model_path: str | None = None
    model_id: str = ""
    epochs: int = 0
    duration: float = 0.0
    train_loss: float | None = None
    val_loss: float | None = None


class TrainingFailed(_ConfigPayload, kw_only=True):
    """TRAINING_FAILED: a training run crashed or was aborted."""

    error: str
    error_details: str = ""
    duration: float = 0.0
    success: bool = False


class EvaluationCompleted(_ConfigPayload, kw_only=True):
    """EVALUATION_COMPLETED: a model's gauntlet or tournament finished."""

    model_id: str = ""
    model_path: str = ""
    elo: float | None = None
    elo_delta: float = 0.0
    win_rate: float | None = None
    games_played: int = 0
    opponents: list[str] = msgspec.field(default_factory=list)


class ModelPromoted(_ConfigPayload, kw_only=True):
    """MODEL_PROMOTED: a model became the canonical one for its configuration."""

    model_id: str = ""
    model_path: str = ""
    elo: float | None = None
    elo_gain: float = 0.0
    elo_improvement: float = 0.0
    tier: str = ""
    promotion_type: str = ""


class PromotionFailed(_ConfigPayload, kw_only=True):
    """PROMOTION_FAILED: promoting a model failed (not a rejection on merit)."""

    error: str
    model_id: str = ""


class DataSyncStarted(_ConfigPayload, kw_only=True):
    """DATA_SYNC_STARTED: a game data sync with a host began."""

    host: str = ""
    sync_type: str = ""
    targets: list[str] = msgspec.field(default_factory=list)


class DataSyncCompleted(_ConfigPayload, kw_only=True):
    """DATA_SYNC_COMPLETED: a game data sync finished."""

    host: str = ""
    games_synced: int = 0
    bytes_transferred: int = 0
    duration: float = 0.0
    avg_quality_score: float = 0.0
    high_quality_count: int = 0


class DataSyncFailed(_ConfigPayload, kw_only=True):
    """DATA_SYNC_FAILED: a game data sync failed."""

    error: str
    host: str = ""
    retry_count: int = 0


class NpzExportComplete(_ConfigPayload, kw_only=True):
    """NPZ_EXPORT_COMPLETE: games were exported to an NPZ training file."""

    samples_exported: int = 0
    games_exported: int = 0
    output_path: str = ""
    success: bool = True
    duration_seconds: float = 0.0


class NewGamesAvailable(_ConfigPayload, kw_only=True):
    """NEW_GAMES_AVAILABLE: a host has new games (recorded, synced or generated)."""

    host: str = ""
    new_games: int = 0
    total_games: int = 0


class SelfplayComplete(_ConfigPayload, kw_only=True):
    """SELFPLAY_COMPLETE: a selfplay batch finished."""

    games_played: int = 0
    games_generated: int = 0
    db_path: str = ""
    engine: str = ""
    duration_seconds: float = 0.0
    success: bool = True
    node_id: str = ""
    task_id: str = ""
    iteration: int = 0
    error: str | None = None


class HostOffline(EventPayload, kw_only=True):
    """HOST_OFFLINE: a host stopped answering (``host`` or ``node_id`` names it)."""

    host: str = ""
    node_id: str = ""
    reason: str = ""
    last_seen: float | None = None


class NodeRecovered(EventPayload, kw_only=True):
    """NODE_RECOVERED: a node is healthy again."""

    node_id: str
    host: str = ""
    node_ip: str = ""
    recovery_time_seconds: float = 0.0


class DaemonStarted(EventPayload, kw_only=True):
    """DAEMON_STARTED: a daemon's task started."""

    daemon_name: str
    hostname: str = ""
    pid: int = 0


class DaemonStopped(EventPayload, kw_only=True):
    """DAEMON_STOPPED: a daemon's task stopped."""

    daemon_name: str
    hostname: str = ""
    reason: str = ""


class DaemonStatusChanged(EventPayload, kw_only=True):
    """DAEMON_STATUS_CHANGED: a daemon moved between lifecycle states (lower-case names)."""

    daemon_name: str
    old_status: str
    new_status: str
    hostname: str = ""
    reason: str = ""
    error: str | None = None


class ModelDistributionComplete(_ConfigPayload, kw_only=True):
    """MODEL_DISTRIBUTION_COMPLETE: models were fanned out to the cluster."""

    model_path: str = ""
    models_collected: int = 0
    models_distributed: int = 0
    target_hosts: int = 0
    duration: float = 0.0


# Canonical event type NAME -> its payload Struct. A type not listed here has a free-form payload.
PAYLOAD_TYPES: dict[str, type[EventPayload]] = {
    "TRAINING_STARTED": TrainingStarted,
    "TRAINING_COMPLETED": TrainingCompleted,
    "TRAINING_FAILED": TrainingFailed,
    "EVALUATION_COMPLETED": EvaluationCompleted,
    "MODEL_PROMOTED": ModelPromoted,
    "PROMOTION_FAILED": PromotionFailed,
    "DATA_SYNC_STARTED": DataSyncStarted,
    "DATA_SYNC_COMPLETED": DataSyncCompleted,
    "DATA_SYNC_FAILED": DataSyncFailed,
    "NPZ_EXPORT_COMPLETE": NpzExportComplete,
    "NEW_GAMES_AVAILABLE": NewGamesAvailable,
    "SELFPLAY_COMPLETE": SelfplayComplete,
    "HOST_OFFLINE": HostOffline,
    "NODE_RECOVERED": NodeRecovered,
    "DAEMON_STARTED": DaemonStarted,
    "DAEMON_STOPPED": DaemonStopped,
    "DAEMON_STATUS_CHANGED": DaemonStatusChanged,
    "MODEL_DISTRIBUTION_COMPLETE": ModelDistributionComplete,
}

# msgspec reports "Expected `int`, got `str` - at `$.games_synced`" or
# "Object missing required field `error`"; the field is pulled out for the error's attribute.
_AT_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")


class PayloadValidationError(ValueError):
    """A payload does not match its event type's Struct: names the type, the field and what was expected."""

    def __init__(self, event_type: str, field: str | None, detail: str) -> None:
        self.event_type = event_type
        self.field = field
        self.detail = detail
        where = f", field {field!r}" if field else ""
        super().__init__(f"invalid {event_type} payload{where}: {detail}")


def _validation_error(event_type: str, error: msgspec.ValidationError) -> PayloadValidationError:
    message = str(error)
    at = _AT_PATH.search(message)
    if at:
        return PayloadValidationError(event_type, at["path"] or None, message[: at.start()])
    missing = _MISSING.search(message)
    return PayloadValidationError(event_type, missing["field"] if missing else None, message)


def validate_payload(event_type: EventTypeLike, payload: dict[str, Any]) -> EventPayload | dict[str, Any]:
    """Check ``payload`` against the Struct of ``event_type`` (any accepted spelling).

    Returns the typed Struct, or ``payload`` itself (the same object) for a type without one,
    unknown types included. Raises ``PayloadValidationError`` when the payload does not fit.
    """
    canonical = normalize_event_type(event_type, strict=False)
    payload_type = PAYLOAD_TYPES.get(canonical)
    if payload_type is None:
        return payload
    try:
        return msgspec.convert(payload, type=payload_type, strict=False)
    except msgspec.ValidationError as error:
        raise _validation_error(canonical, error) from error
