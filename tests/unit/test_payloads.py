"""Typed payloads of the main events and validate_payload (schemas.payloads)."""

import msgspec
import pytest

from schemas.events import STRICT_ENV_VAR, DataEventType, reload_validation_config
from schemas.payloads import (
    PAYLOAD_TYPES,
    DaemonStatusChanged,
    DataSyncCompleted,
    PayloadValidationError,
    TrainingCompleted,
    validate_payload,
)

MAIN_EVENTS = {
    "TRAINING_STARTED", "TRAINING_COMPLETED", "TRAINING_FAILED", "EVALUATION_COMPLETED",
    "MODEL_PROMOTED", "PROMOTION_FAILED", "DATA_SYNC_STARTED", "DATA_SYNC_COMPLETED",
    "DATA_SYNC_FAILED", "NPZ_EXPORT_COMPLETE", "NEW_GAMES_AVAILABLE", "SELFPLAY_COMPLETE",
    "HOST_OFFLINE", "NODE_RECOVERED", "DAEMON_STARTED", "DAEMON_STOPPED", "DAEMON_STATUS_CHANGED",
    "MODEL_DISTRIBUTION_COMPLETE",
}  # fmt: skip

# The only fields a publisher must send; everything else has a default.
REQUIRED_FIELDS = {
    "TRAINING_FAILED": {"error"},
    "PROMOTION_FAILED": {"error"},
    "DATA_SYNC_FAILED": {"error"},
    "NODE_RECOVERED": {"node_id"},
    "DAEMON_STARTED": {"daemon_name"},
    "DAEMON_STOPPED": {"daemon_name"},
    "DAEMON_STATUS_CHANGED": {"daemon_name", "old_status", "new_status"},
}


def test_registry_covers_the_main_events_by_canonical_name() -> None:
    assert set(PAYLOAD_TYPES) == MAIN_EVENTS
    assert set(PAYLOAD_TYPES) <= set(DataEventType.__members__)


@pytest.mark.parametrize("event_type", sorted(MAIN_EVENTS))
def test_only_the_truly_required_fields_lack_a_default(event_type: str) -> None:
    fields = msgspec.structs.fields(PAYLOAD_TYPES[event_type])
    required = {f.name for f in fields if f.required}
    assert required == REQUIRED_FIELDS.get(event_type, set())


@pytest.mark.parametrize("event_type", sorted(MAIN_EVENTS))
def test_a_payload_with_just_the_required_fields_validates(event_type: str) -> None:
    payload = dict.fromkeys(REQUIRED_FIELDS.get(event_type, ()), "x")
    assert isinstance(validate_payload(event_type, payload), PAYLOAD_TYPES[event_type])


def test_valid_payload_becomes_the_typed_struct() -> None:
    result = validate_payload(
        "DATA_SYNC_COMPLETED", {"games_synced": 150, "duration": 12.5, "host": "gh200-a"}
    )
    assert result == DataSyncCompleted(games_synced=150, duration=12.5, host="gh200-a")


@pytest.mark.parametrize(
    "spelling", ["sync_completed", "Data_Sync_Completed", DataEventType.DATA_SYNC_COMPLETED]
)
def test_any_spelling_of_the_event_type_selects_its_struct(spelling: object) -> None:
    assert isinstance(validate_payload(spelling, {"games_synced": 1}), DataSyncCompleted)


def test_original_payload_shapes_validate() -> None:
    # The examples of the original's API reference, and None where its emitters send None.
    training = validate_payload("TRAINING_COMPLETED", {"config": "hex8_2p", "success": True, "epochs": 50})
    assert training == TrainingCompleted(config="hex8_2p", success=True, epochs=50)
    assert validate_payload("TRAINING_COMPLETED", {"model_path": None}).model_path is None
    status = validate_payload(
        "DAEMON_STATUS_CHANGED",
        {"daemon_name": "auto_sync", "hostname": "n1", "old_status": "running", "new_status": "failed",
         "reason": "exception", "error": None},
    )  # fmt: skip
    assert status == DaemonStatusChanged(
        daemon_name="auto_sync", hostname="n1", old_status="running", new_status="failed", reason="exception"
    )


def test_numbers_sent_as_strings_are_converted() -> None:
    result = validate_payload("DATA_SYNC_COMPLETED", {"games_synced": "150", "duration": "12.5"})
    assert (result.games_synced, result.duration) == (150, 12.5)


def test_unknown_keys_are_ignored_so_newer_publishers_still_validate() -> None:
    result = validate_payload("NEW_GAMES_AVAILABLE", {"host": "n1", "new_games": 10, "added_in_v2": [1]})
    assert (result.host, result.new_games) == ("n1", 10)


def test_wrong_field_type_names_event_field_and_expected_type() -> None:
    with pytest.raises(PayloadValidationError) as caught:
        validate_payload("sync_completed", {"games_synced": "lots"})
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.event_type, error.field) == ("DATA_SYNC_COMPLETED", "games_synced")
    assert (
        str(error) == "invalid DATA_SYNC_COMPLETED payload, field 'games_synced': Expected `int`, got `str`"
    )


def test_missing_required_field_is_named() -> None:
    with pytest.raises(PayloadValidationError, match=r"TRAINING_FAILED.*'error'") as caught:
        validate_payload("TRAINING_FAILED", {"config": "hex8_2p"})
    assert caught.value.field == "error"


def test_a_bad_list_item_is_located_in_the_field() -> None:
    with pytest.raises(PayloadValidationError) as caught:
        validate_payload("EVALUATION_COMPLETED", {"opponents": ["heuristic", 3]})
    assert caught.value.field == "opponents[1]"
    assert "Expected `str`, got `int`" in str(caught.value)


def test_a_payload_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(PayloadValidationError, match="NEW_GAMES_AVAILABLE payload: Expected `object`"):
        validate_payload("NEW_GAMES_AVAILABLE", [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("event_type", ["CUSTOM_EVENT", "ELO_UPDATED", "canonical_selfplay_complete"])
def test_types_without_a_struct_return_the_payload_unchanged(event_type: str) -> None:
    payload = {"anything": object()}
    assert validate_payload(event_type, payload) is payload


def test_unknown_type_payload_passes_even_in_strict_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # Type validation is normalize/validate_event_type's job; payload validation never rejects a type.
    monkeypatch.setenv(STRICT_ENV_VAR, "true")
    reload_validation_config()
    try:
        payload = {"k": 1}
        assert validate_payload("CUSTOM_EVENT", payload) is payload
    finally:
        monkeypatch.undo()
        reload_validation_config()
