"""Event types: the catalog enums and the one way to turn any spelling into a canonical key.

Everything in this project keys an event type by its canonical NAME (``"NEW_GAMES_AVAILABLE"``),
never by the original system's lowercase enum value (``"new_games"``), which differs from the
name for most types. ``normalize_event_type`` maps every accepted spelling to that NAME:

* a ``DataEventType`` or ``StageEvent`` member;
* a data event NAME or value, in any case (``"new_games"``, ``"NEW_GAMES"``, ``"New_Games_Available"``);
* the original router's keys: all of them are a member's NAME or value, except the one for
  ``PBT_COMPLETED`` (the original rewrote ``pbt_completed`` to ``PBT_GENERATION_COMPLETE``, a bug
  that is not carried over: ``pbt_completed`` is ``PBT_COMPLETED`` here);
* a stage event NAME or value, which normalises to the StageEvent NAME
  (``"canonical_selfplay_complete"`` -> ``"CANONICAL_SELFPLAY_COMPLETE"``). Where a stage NAME equals
  a data NAME (``TRAINING_STARTED``, ``SELFPLAY_COMPLETE``...) the two are the same key.

An unknown type passes through stripped, unless strict validation is on
(``RINGRIFT_EVENT_VALIDATION_STRICT=true``, read once into ``EventValidationConfig``; call
``reload_validation_config()`` after changing the environment), in which case
``UnknownEventTypeError`` is raised with close-match suggestions.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from schemas._event_catalog import (
    DATA_TO_STAGE_EVENT,
    EVENT_CATEGORY,
    STAGE_TO_DATA_EVENT,
    DataEventType,
    StageEvent,
)

__all__ = [
    "KNOWN_EVENT_TYPES",
    "STRICT_ENV_VAR",
    "DataEventType",
    "EventTypeLike",
    "EventValidationConfig",
    "StageEvent",
    "UnknownEventTypeError",
    "data_event_for_stage",
    "event_category",
    "is_known_event_type",
    "normalize_event_type",
    "reload_validation_config",
    "stage_event_for",
    "suggest_event_types",
    "validate_event_type",
    "validation_config",
]

EventTypeLike = str | DataEventType | StageEvent

STRICT_ENV_VAR = "RINGRIFT_EVENT_VALIDATION_STRICT"
_TRUTHY = frozenset({"1", "true", "yes"})
_MAX_SUGGESTIONS = 5

_DATA_NAMES = frozenset(DataEventType.__members__)
_STAGE_NAMES = frozenset(StageEvent.__members__)
KNOWN_EVENT_TYPES: frozenset[str] = _DATA_NAMES | _STAGE_NAMES


def _build_spellings() -> dict[str, str]:
    spellings: dict[str, str] = {}
    # Data spellings go in first and stage spellings only fill gaps (setdefault): where a data
    # value and a stage value collide, the data event wins. In the catalog every such collision
    # is between a data and a stage event of the same NAME, so nothing is actually shadowed.
    # Lower-case NAMEs are keys too, so the case-insensitive fallback is one more lookup.
    # The original's router keys need no entries of their own: each is a NAME or a value (the
    # generator checks this), bar PBT_COMPLETED's, the known bug left out on purpose.
    for member in DataEventType:
        for spelling in (member.name, member.value, member.name.lower()):
            spellings.setdefault(spelling, member.name)
    for stage in StageEvent:
        for spelling in (stage.name, stage.value, stage.name.lower()):
            spellings.setdefault(spelling, stage.name)
    return spellings


_SPELLINGS: dict[str, str] = _build_spellings()
# Upper-cased spellings -> NAME, so suggestions also find a type by a near-miss of its value.
_SUGGESTION_INDEX: dict[str, str] = {spelling.upper(): name for spelling, name in _SPELLINGS.items()}


@dataclass(frozen=True, slots=True)
class EventValidationConfig:
    """How unknown event types are treated: passed through (default) or rejected (strict)."""

    strict: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EventValidationConfig:
        """Read ``RINGRIFT_EVENT_VALIDATION_STRICT`` (true/1/yes, any case, means strict)."""
        env = os.environ if environ is None else environ
        return cls(strict=env.get(STRICT_ENV_VAR, "").strip().lower() in _TRUTHY)


_config = EventValidationConfig.from_env()


def validation_config() -> EventValidationConfig:
    """The validation config in effect (read from the environment at import or last reload)."""
    return _config


def reload_validation_config(environ: Mapping[str, str] | None = None) -> EventValidationConfig:
    """Re-read the validation config from ``environ`` (default ``os.environ``) and return it."""
    global _config
    _config = EventValidationConfig.from_env(environ)
    return _config


class UnknownEventTypeError(ValueError):
    """An event type that is not in the catalog, rejected because strict validation is on."""

    def __init__(self, event_type: str, suggestions: list[str]) -> None:
        self.event_type = event_type
        self.suggestions = suggestions
        hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "no close match"
        super().__init__(f"unknown event type {event_type!r} ({hint}); {STRICT_ENV_VAR} is on")


def suggest_event_types(event_type: str, limit: int = _MAX_SUGGESTIONS) -> list[str]:
    """Up to ``limit`` canonical names close to ``event_type``: fuzzy matches first, then substrings."""
    key = event_type.strip().upper().replace("-", "_").replace(" ", "_")
    if not key:
        return []
    fuzzy = difflib.get_close_matches(key, _SUGGESTION_INDEX, n=limit * 2, cutoff=0.6)
    ranked = [_SUGGESTION_INDEX[spelling] for spelling in fuzzy]
    if len(key) >= 3:
        # Shortest first: the fewer extra words a match carries, the likelier it was meant.
        ranked += sorted((name for name in KNOWN_EVENT_TYPES if key in name), key=lambda n: (len(n), n))
    return list(dict.fromkeys(ranked))[:limit]


def normalize_event_type(event_type: EventTypeLike, *, strict: bool | None = None) -> str:
    """Return the canonical NAME for any accepted spelling of an event type.

    Unknown names come back stripped, or raise ``UnknownEventTypeError`` when ``strict`` is true
    (``None``: the environment's setting). ``TypeError`` for a non-string, ``ValueError`` for "".
    """
    # Hot path: an exact spelling (canonical name or original value) is one dict lookup.
    kind = type(event_type)
    if kind is str:
        canonical = _SPELLINGS.get(event_type)
        if canonical is not None:
            return canonical
    elif kind is DataEventType or kind is StageEvent:
        return event_type._name_  # the documented sunder attribute; .name is a 3x slower descriptor
    return _normalize_slow(event_type, strict)


def _normalize_slow(event_type: object, strict: bool | None) -> str:
    if isinstance(event_type, Enum) and isinstance(event_type.value, str):
        event_type = event_type.value  # a foreign enum (e.g. the original's): go by its value
    if not isinstance(event_type, str):
        raise TypeError(
            "event type must be a str, DataEventType or StageEvent, "
            f"not {type(event_type).__name__}: {event_type!r}"
        )
    text = event_type.strip()
    if not text:
        raise ValueError("event type must not be empty")
    canonical = _SPELLINGS.get(text) or _SPELLINGS.get(text.lower())
    if canonical is not None:
        return canonical
    if _config.strict if strict is None else strict:
        raise UnknownEventTypeError(text, suggest_event_types(text))
    return text


def validate_event_type(event_type: EventTypeLike, *, strict: bool | None = None) -> str:
    """Normalise ``event_type``; in strict mode (``None``: from the environment) reject unknown ones.

    The entry point for publish and consume boundaries; same result as ``normalize_event_type``.
    """
    return normalize_event_type(event_type, strict=strict)


def is_known_event_type(event_type: object) -> bool:
    """True if ``event_type`` is a spelling of a catalog data or stage event type."""
    try:
        return normalize_event_type(event_type, strict=False) in KNOWN_EVENT_TYPES
    except (TypeError, ValueError):
        return False


def stage_event_for(event_type: EventTypeLike) -> str | None:
    """The StageEvent NAME the stage bus carries for ``event_type``, or None.

    A data event type maps as the catalog says (``NEW_GAMES_AVAILABLE`` -> ``SELFPLAY_COMPLETE``);
    a stage event is carried as itself.
    """
    canonical = normalize_event_type(event_type, strict=False)
    mapped = DATA_TO_STAGE_EVENT.get(canonical)
    if mapped is None and canonical in _STAGE_NAMES:
        return canonical
    return mapped


def data_event_for_stage(stage: EventTypeLike) -> str | None:
    """The DataEventType NAME a stage event stands for, or None (also for a non-stage input).

    As the catalog says (``SYNC_COMPLETE`` -> ``DATA_SYNC_COMPLETED``); a stage event with no
    catalog entry whose NAME is also a data event (``NPZ_EXPORT_COMPLETE``) stands for that one.
    """
    canonical = normalize_event_type(stage, strict=False)
    if canonical not in _STAGE_NAMES:
        return None
    mapped = STAGE_TO_DATA_EVENT.get(canonical)
    if mapped is None and canonical in _DATA_NAMES:
        return canonical
    return mapped


def event_category(event_type: EventTypeLike) -> str | None:
    """The catalog category of a data event type (``"data_collection"``...), None for others."""
    return EVENT_CATEGORY.get(normalize_event_type(event_type, strict=False))
