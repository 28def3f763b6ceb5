"""Event type catalog, normalisation, strict validation and stage mappings (schemas.events)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.events import (
    KNOWN_EVENT_TYPES,
    STRICT_ENV_VAR,
    DataEventType,
    EventValidationConfig,
    StageEvent,
    UnknownEventTypeError,
    data_event_for_stage,
    event_category,
    is_known_event_type,
    normalize_event_type,
    reload_validation_config,
    stage_event_for,
    suggest_event_types,
    validate_event_type,
    validation_config,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOG = json.loads((ROOT / "schemas" / "data" / "catalog.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def lenient_by_default(monkeypatch: pytest.MonkeyPatch):
    # Tests start from non-strict validation whatever the outer environment says.
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)
    reload_validation_config()
    yield
    monkeypatch.undo()
    reload_validation_config()


@pytest.fixture
def strict_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_ENV_VAR, "true")
    reload_validation_config()


# --- catalog -------------------------------------------------------------------------------------


def test_catalog_has_352_data_event_types_and_21_stage_events() -> None:
    # An Enum silently turns a duplicate value into an alias, so both counts matter.
    assert len(DataEventType) == len(DataEventType.__members__) == 352
    assert len(StageEvent) == len(StageEvent.__members__) == 21


def test_enum_members_match_the_catalog_names_and_values() -> None:
    assert {m.name: m.value for m in DataEventType} == {e["name"]: e["value"] for e in CATALOG["event_types"]}
    assert {m.name: m.value for m in StageEvent} == {s["name"]: s["value"] for s in CATALOG["stage_events"]}


def test_known_event_types_are_the_data_and_stage_names() -> None:
    data, stage = set(DataEventType.__members__), set(StageEvent.__members__)
    assert KNOWN_EVENT_TYPES == data | stage
    # Five stage events share their NAME with a data event type: they are one key, not two.
    assert data & stage == {
        "SELFPLAY_COMPLETE",
        "NPZ_EXPORT_STARTED",
        "NPZ_EXPORT_COMPLETE",
        "TRAINING_STARTED",
        "TRAINING_FAILED",
    }
    assert len(KNOWN_EVENT_TYPES) == 352 + 21 - 5


def test_generated_catalog_module_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_event_catalog.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("NEW_GAMES_AVAILABLE", "NEW_GAMES_AVAILABLE"),
        ("new_games", "NEW_GAMES_AVAILABLE"),
        ("NEW_GAMES", "NEW_GAMES_AVAILABLE"),
        ("New_Games_Available", "NEW_GAMES_AVAILABLE"),
        ("new_games_available", "NEW_GAMES_AVAILABLE"),
        ("  new_games\n", "NEW_GAMES_AVAILABLE"),
        (DataEventType.NEW_GAMES_AVAILABLE, "NEW_GAMES_AVAILABLE"),
        ("sync_completed", "DATA_SYNC_COMPLETED"),
        ("Sync_Completed", "DATA_SYNC_COMPLETED"),
        ("model_promoted", "MODEL_PROMOTED"),
        ("training_threshold", "TRAINING_THRESHOLD_REACHED"),
        ("training_threshold_reached", "TRAINING_THRESHOLD_REACHED"),
        # The original rewrote this value to PBT_GENERATION_COMPLETE: a bug, not carried over.
        ("pbt_completed", "PBT_COMPLETED"),
        ("PBT_GENERATION_COMPLETE", "PBT_GENERATION_COMPLETE"),
        # Stage events normalise to their own name, not to the data event they map to.
        ("canonical_selfplay_complete", "CANONICAL_SELFPLAY_COMPLETE"),
        (StageEvent.CANONICAL_SELFPLAY_COMPLETE, "CANONICAL_SELFPLAY_COMPLETE"),
        ("sync_complete", "SYNC_COMPLETE"),
        ("Training_Complete", "TRAINING_COMPLETE"),
    ],
)
def test_normalize_accepts_every_spelling(spelling: object, canonical: str) -> None:
    assert normalize_event_type(spelling) == canonical


def test_every_data_event_type_normalises_from_member_name_and_value() -> None:
    for member in DataEventType:
        spellings = (member, member.name, member.value, member.name.lower(), member.value.upper())
        assert {normalize_event_type(s) for s in spellings} == {member.name}, member


def test_every_stage_event_normalises_to_its_own_name() -> None:
    for stage in StageEvent:
        assert {normalize_event_type(s) for s in (stage, stage.name, stage.value)} == {stage.name}, stage


def test_stage_and_data_event_of_the_same_name_are_one_key() -> None:
    assert normalize_event_type(StageEvent.TRAINING_STARTED) == normalize_event_type(
        DataEventType.TRAINING_STARTED
    )
    assert normalize_event_type("selfplay_complete") == "SELFPLAY_COMPLETE"


def test_every_router_key_of_the_original_is_accepted() -> None:
    for entry in CATALOG["event_types"]:
        if entry["name"] == "PBT_COMPLETED":
            continue  # its router_key names another type; see the pbt_completed case above
        assert normalize_event_type(entry["router_key"]) == entry["name"], entry


def test_unknown_types_pass_through_stripped_with_their_case() -> None:
    assert normalize_event_type("  Custom.Event ") == "Custom.Event"
    assert normalize_event_type("CUSTOM_EVENT") == "CUSTOM_EVENT"
    assert validate_event_type("CUSTOM_EVENT") == "CUSTOM_EVENT"


@pytest.mark.parametrize("bad", [None, 42, b"new_games", ["NEW_GAMES_AVAILABLE"]])
def test_non_string_input_is_a_type_error_naming_the_type(bad: object) -> None:
    with pytest.raises(TypeError, match=type(bad).__name__):
        normalize_event_type(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_event_type_is_a_value_error(empty: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_event_type(empty)


# --- strict validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "strict"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" Yes ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("", False),
        ("enabled", False),
    ],
)
def test_strict_flag_is_read_from_the_environment(value: str, strict: bool) -> None:
    assert EventValidationConfig.from_env({STRICT_ENV_VAR: value}).strict is strict


def test_strict_is_off_without_the_variable() -> None:
    assert EventValidationConfig.from_env({}).strict is False


def test_strict_mode_rejects_unknown_types_with_suggestions(strict_env: None) -> None:
    assert validation_config().strict is True
    with pytest.raises(UnknownEventTypeError) as caught:
        normalize_event_type("NEW_GAME")
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.event_type == "NEW_GAME"
    assert "NEW_GAMES_AVAILABLE" in error.suggestions
    assert "'NEW_GAME'" in str(error) and "NEW_GAMES_AVAILABLE" in str(error)


def test_strict_mode_still_accepts_every_known_spelling(strict_env: None) -> None:
    assert validate_event_type("new_games") == "NEW_GAMES_AVAILABLE"
    assert validate_event_type("Canonical_Selfplay_Complete") == "CANONICAL_SELFPLAY_COMPLETE"


def test_explicit_strict_argument_overrides_the_environment(strict_env: None) -> None:
    assert validate_event_type("CUSTOM_EVENT", strict=False) == "CUSTOM_EVENT"
    reload_validation_config({})
    with pytest.raises(UnknownEventTypeError):
        validate_event_type("CUSTOM_EVENT", strict=True)


def test_suggestions_rank_close_names_first_and_stop_at_five() -> None:
    suggestions = suggest_event_types("trainng_completed")
    assert suggestions[0] == "TRAINING_COMPLETED"
    assert len(suggest_event_types("DATA")) == 5
    assert suggest_event_types("sync_complet")[:2] == ["SYNC_COMPLETE", "DATA_SYNC_COMPLETED"]


def test_an_unknown_type_with_no_close_match_says_so() -> None:
    with pytest.raises(UnknownEventTypeError, match="no close match") as caught:
        validate_event_type("zzqqxx", strict=True)
    assert caught.value.suggestions == []


def test_is_known_event_type() -> None:
    assert is_known_event_type("new_games")
    assert is_known_event_type(DataEventType.MODEL_PROMOTED)
    assert is_known_event_type("CANONICAL_SELFPLAY_COMPLETE")
    assert not is_known_event_type("CUSTOM_EVENT")
    assert not is_known_event_type("")
    assert not is_known_event_type(None)


# --- stage mappings and categories ---------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["NEW_GAMES_AVAILABLE", "new_games", DataEventType.NEW_GAMES_AVAILABLE])
def test_new_games_available_is_carried_as_selfplay_complete_on_the_stage_bus(spelling: object) -> None:
    assert stage_event_for(spelling) == "SELFPLAY_COMPLETE"


def test_stage_event_for_data_event_types() -> None:
    assert stage_event_for("DATA_SYNC_COMPLETED") == "SYNC_COMPLETE"
    # Renamed in the original, so its router never mirrored it; the catalog's map is kept here.
    assert stage_event_for("TRAINING_COMPLETED") == "TRAINING_COMPLETE"
    assert stage_event_for("ELO_UPDATED") == "ELO_CALIBRATION_COMPLETE"
    assert stage_event_for("HOST_OFFLINE") is None
    assert stage_event_for("CUSTOM_EVENT") is None


def test_a_stage_event_is_carried_as_itself() -> None:
    assert stage_event_for("gpu_selfplay_complete") == "GPU_SELFPLAY_COMPLETE"
    assert stage_event_for("NPZ_EXPORT_COMPLETE") == "NPZ_EXPORT_COMPLETE"


def test_data_event_for_stage() -> None:
    assert data_event_for_stage("SELFPLAY_COMPLETE") == "SELFPLAY_COMPLETE"
    assert data_event_for_stage("canonical_selfplay_complete") == "SELFPLAY_COMPLETE"
    assert data_event_for_stage(StageEvent.SYNC_COMPLETE) == "DATA_SYNC_COMPLETED"
    assert data_event_for_stage("PBT_COMPLETE") == "PBT_GENERATION_COMPLETE"
    assert data_event_for_stage("npz_export_complete") == "NPZ_EXPORT_COMPLETE"
    assert data_event_for_stage("ITERATION_COMPLETE") is None
    assert data_event_for_stage("NEW_GAMES_AVAILABLE") is None  # a data event, not a stage event


def test_stage_mappings_only_name_catalog_members() -> None:
    for member in DataEventType:
        stage = stage_event_for(member)
        assert stage is None or stage in StageEvent.__members__
    for stage in StageEvent:
        data = data_event_for_stage(stage)
        assert data is None or data in DataEventType.__members__


def test_event_category() -> None:
    assert event_category("new_games") == "data_collection"
    assert event_category(DataEventType.TRAINING_COMPLETED) == "training"
    assert event_category("SYNC_COMPLETE") is None
    assert event_category("CUSTOM_EVENT") is None
    assert all(event_category(member) for member in DataEventType)
