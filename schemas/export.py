"""The event contract for other languages: JSON Schema of the envelope and catalog, AsyncAPI, a checker.

What `coord schema export` / `coord schema check` call (the CLI only wires these up):

    envelope_json_schema()   the envelope a publisher sends (draft 2020-12): lenient about the type,
                             as readers are (any non-empty string; the known names are documented)
    catalog_json_schema()    one definition per catalog event type (data + stage, by canonical NAME)
                             with its typed payload where `schemas.payloads` has one, and a top-level
                             `oneOf` discriminated by the `event_type` const: strict, known names only
    asyncapi_document(ns)    AsyncAPI 3.0 of the streams and topics (see `schemas._asyncapi`)
    check_event(data)        the problems a reader would have with one JSON event, in words
    dump(obj)                pretty JSON with sorted keys, stable for diffs

The JSON Schemas state what a publisher should send. Readers are more forgiving, and `check_event`
follows the readers: legacy lowercase type values and any case (`new_games`) are normalised, numeric
strings are converted for number fields (reported as warnings), CloudEvents 1.0 is understood.
Entries of `check_event` starting with "warning:" do not make an event invalid.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from schemas import _asyncapi
from schemas import content_hash as _hashing
from schemas.envelope import SCHEMA_VERSION, DecodeError, EventSource, RouterEvent, decode
from schemas.events import (
    KNOWN_EVENT_TYPES,
    DataEventType,
    StageEvent,
    event_category,
    normalize_event_type,
    stage_event_for,
    suggest_event_types,
    validation_config,
)
from schemas.payloads import PAYLOAD_TYPES, PayloadValidationError, validate_payload

__all__ = [
    "CATALOG_ID",
    "ENVELOPE_ID",
    "JSON_SCHEMA_DIALECT",
    "asyncapi_document",
    "catalog_json_schema",
    "check_event",
    "dump",
    "envelope_json_schema",
    "event_definitions",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_ID = "urn:ringrift:schema:envelope"
CATALOG_ID = "urn:ringrift:schema:event-catalog"
_REF = "#/$defs/"

_FIELD_DOCS: dict[str, str] = {
    "event_type": "The event type's canonical NAME (`NEW_GAMES_AVAILABLE`), see $defs/EventType. Readers also "
                  "accept the original lowercase values (`new_games`) and any case, and normalise them.",
    "payload": "The event's data: a JSON object. Typed for the main events (see the catalog schema).",
    "timestamp": "When the event happened, seconds since the Unix epoch. 0 or absent: the broker's record time.",
    "source": "Who published the event (a service or job name).",
    "origin": "Which bus the event came from; publishers leave it out.",
    "event_id": "A unique id (UUID). Absent: derived from the record's position, so a re-read gets the same id.",
    "trace_id": "W3C trace-context trace id (32 lowercase hex). Absent: derived from event_id.",
    "correlation_id": "Groups the events of one workflow.",
    "parent_event_id": "The event_id of the event that caused this one.",
    "content_hash": "SHA-256 (64 lowercase hex) of the RFC 8785 canonical JSON of {event_type, payload without "
                    "timestamp, created_at, node_name, source, routed}. Absent: computed by the reader.",
    "schema_version": f"Envelope schema version ({SCHEMA_VERSION}); readers never refuse a higher one alone.",
    "target_group": "Only this consumer group handles the event; every other group acknowledges and skips it "
                    "(dead-letter re-drives). Absent or null: every group.",
}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {  # the envelope's optional fields as a reader decodes them
    "timestamp": (int, float), "source": (str,), "event_id": (str,), "trace_id": (str,),
    "correlation_id": (str,), "parent_event_id": (str,), "content_hash": (str,), "schema_version": (int,),
    "target_group": (type(None), str),
}
_JSON_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "an array",
                    bool: "a boolean", type(None): "null"}


def _clean(schema: Any) -> Any:
    """msgspec output made plainer for other languages: no empty `required` lists."""
    if isinstance(schema, dict):
        return {key: _clean(value) for key, value in schema.items() if not (key == "required" and not value)}
    if isinstance(schema, list):
        return [_clean(item) for item in schema]
    return schema


def _legacy_values() -> dict[str, str]:
    """Original lowercase wire value -> canonical NAME, where the two differ in more than case."""
    values: dict[str, str] = {}
    for member in (*DataEventType, *StageEvent):
        if member.value != member.name.lower() and normalize_event_type(member.value, strict=False) == member.name:
            values.setdefault(member.value, member.name)
    return dict(sorted(values.items()))


def _envelope_defs() -> dict[str, Any]:
    """`Envelope`, `EventType` and `EventSource` definitions, refs pointing into `#/$defs/`."""
    _, components = msgspec.json.schema_components([RouterEvent], ref_template=_REF + "{name}")
    envelope = _clean(components["RouterEvent"])
    properties = envelope["properties"]
    properties["event_type"] = {
        "type": "string", "pattern": "\\S",
        "anyOf": [{"$ref": _REF + "EventType"}, {"type": "string"}],
        "examples": ["TRAINING_COMPLETED", "NEW_GAMES_AVAILABLE"],
    }
    properties["payload"] = {"type": "object", "default": {}}
    for name, text in _FIELD_DOCS.items():
        properties[name]["description"] = text
    envelope.update(
        title="Envelope",
        description="One event as UTF-8 JSON. Only event_type and payload are required; readers fill in the "
                    "rest. Unknown fields are ignored (never rejected), so the envelope can grow.",
        required=["event_type", "payload"],
    )
    event_source = _clean(components["EventSource"])
    event_source.update(type="string", enum=sorted(member.value for member in EventSource))
    event_type = {
        "title": "EventType",
        "description": "A catalog event type by canonical NAME (data and stage events). Readers also accept the "
                       "original lowercase values (x-legacy-values maps those that differ from the "
                       "lowercased NAME) and any case.",
        "type": "string",
        "enum": sorted(KNOWN_EVENT_TYPES),
        "x-legacy-values": _legacy_values(),
    }
    return {"Envelope": envelope, "EventSource": event_source, "EventType": event_type}


def envelope_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the envelope a publisher sends, any event type."""
    defs = _envelope_defs()
    return {
        "$schema": JSON_SCHEMA_DIALECT, "$id": ENVELOPE_ID, "title": "RingRift event envelope",
        "description": defs["Envelope"]["description"], "$ref": _REF + "Envelope", "$defs": defs,
    }


def _payload_defs() -> tuple[dict[str, str], dict[str, Any]]:
    """(canonical NAME -> payload definition name, definitions) for the typed payloads."""
    structs = sorted(set(PAYLOAD_TYPES.values()), key=lambda struct: struct.__name__)
    _, components = msgspec.json.schema_components(structs, ref_template=_REF + "{name}Payload")
    defs = {f"{name}Payload": _clean(schema) for name, schema in components.items()}
    for schema in defs.values():
        schema["description"] = schema.get("description", "") + (
            " Unknown keys are allowed and ignored; readers also convert numeric strings for number fields.")
    names = {event: f"{struct.__name__}Payload" for event, struct in PAYLOAD_TYPES.items()}
    return names, defs


def event_definitions() -> dict[str, dict[str, Any]]:
    """One schema per catalog event type, keyed by canonical NAME (refs point into `#/$defs/`)."""
    payload_names, _ = _payload_defs()
    data_names, stage_names = set(DataEventType.__members__), set(StageEvent.__members__)
    definitions: dict[str, dict[str, Any]] = {}
    for name in sorted(KNOWN_EVENT_TYPES):
        kinds = [kind for kind, names in (("data", data_names), ("stage", stage_names)) if name in names]
        legacy = sorted({member.value for member in (*DataEventType, *StageEvent) if member.name == name})
        payload: dict[str, Any] = ({"$ref": _REF + payload_names[name]} if name in payload_names
                                   else {"type": "object", "description": "Free-form: no typed payload yet."})
        struct = PAYLOAD_TYPES.get(name)
        summary = (struct.__doc__ or "").strip() if struct else f"{name}: a free-form payload."
        definitions[name] = {
            "title": name,
            "description": f"{summary} ({' and '.join(kinds)} event)",
            "allOf": [{"$ref": _REF + "Envelope"}],
            "type": "object",
            "properties": {"event_type": {"const": name}, "payload": payload},
            "required": ["event_type", "payload"],
            "x-category": event_category(name),
            "x-kinds": kinds,
            "x-legacy-values": legacy,
            "x-stage-stream": stage_event_for(name) is not None,
        }
    return definitions


def catalog_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a whole event against the catalog: `oneOf` by `event_type` const."""
    events = event_definitions()
    _, payloads = _payload_defs()
    return {
        "$schema": JSON_SCHEMA_DIALECT, "$id": CATALOG_ID, "title": "RingRift event catalog",
        "description": f"Every catalog event type ({len(events)}: data and stage events by canonical NAME) with "
                       "its payload. Publish the canonical NAME; for lenient checks of types outside the "
                       "catalog (or legacy spellings) validate against the envelope schema instead.",
        "oneOf": [{"$ref": _REF + name} for name in events],
        "x-discriminator": {"propertyName": "event_type", "mapping": {name: _REF + name for name in events}},
        "$defs": {**_envelope_defs(), **payloads, **events},
    }


def asyncapi_document(namespace: str = "ringrift") -> dict[str, Any]:
    """AsyncAPI 3.0 of the streams and topics under `namespace`, messages typed by the catalog."""
    return _asyncapi.build_document(catalog_json_schema(), namespace=namespace, version=f"{SCHEMA_VERSION}.0.0")


def dump(obj: Any) -> str:
    """Pretty JSON with sorted keys and a final newline (stable output for files and diffs)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _envelope_problems(obj: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    event_type = obj.get("event_type")
    if "event_type" not in obj:
        problems.append("missing field 'event_type' (the event type's canonical NAME)")
    elif not isinstance(event_type, str) or not event_type.strip():
        problems.append(f"'event_type' must be a non-empty string, got {_json_type(event_type)}")
    if "payload" not in obj:
        problems.append("missing field 'payload' (a JSON object; {} when the event carries no data)")
    elif not isinstance(obj["payload"], dict):
        problems.append(f"'payload' must be an object, got {_json_type(obj['payload'])}")
    for name, types in _FIELD_TYPES.items():
        value = obj.get(name)
        if name in obj and (isinstance(value, bool) or not isinstance(value, types)):
            want = _JSON_TYPE_NAMES[types[-1]]
            problems.append(f"'{name}' must be {want}, got {_json_type(value)}")
    if "origin" in obj and obj["origin"] not in {member.value for member in EventSource}:
        problems.append(f"'origin' must be one of {sorted(m.value for m in EventSource)}, got {obj['origin']!r}")
    return problems


def _type_problems(event_type: str, strict: bool) -> list[str]:
    name = normalize_event_type(event_type, strict=False)
    if name not in KNOWN_EVENT_TYPES:
        close = suggest_event_types(name)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (no close match)"
        return [f"{'' if strict else 'warning: '}unknown event type {name!r}{hint}"]
    if name != event_type:
        return [f"warning: event_type {event_type!r} is accepted and read as {name!r}; publish {name!r}"]
    return []


def _payload_problems(event: RouterEvent) -> list[str]:
    try:
        validate_payload(event.event_type, event.payload)
    except PayloadValidationError as exc:
        return [str(exc)]
    struct = PAYLOAD_TYPES.get(event.event_type)
    if struct is not None:
        try:
            msgspec.convert(event.payload, type=struct, strict=True)
        except msgspec.ValidationError as exc:
            return [f"warning: {event.event_type} payload: {exc} (readers convert it; the schema says otherwise)"]
    return []


def check_event(data: bytes | str | dict[str, Any], *, strict: bool | None = False) -> list[str]:
    """The problems with one JSON event (our envelope or a structured CloudEvent); empty means valid.

    An unknown event type is a problem when `strict` (None: `RINGRIFT_EVENT_VALIDATION_STRICT`), else
    a "warning: ..." entry with suggestions. Warnings never make an event invalid.
    """
    if strict is None:
        strict = validation_config().strict
    if isinstance(data, dict):
        obj: Any = data
        raw = msgspec.json.encode(data)
    else:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return [f"not JSON: {exc}"]
    if not isinstance(obj, dict):
        return [f"not a JSON object: got {_json_type(obj)}"]
    cloudevent = "specversion" in obj
    problems = [] if cloudevent else _envelope_problems(obj)
    if problems:
        return problems
    try:
        event = decode(raw)
    except DecodeError as exc:
        return [f"{'CloudEvent' if cloudevent else 'envelope'} not readable: {exc.reason}"]
    original = str(obj["type"] if cloudevent else obj["event_type"]).strip()
    problems = _type_problems(original, strict) + _payload_problems(event)
    given = obj.get("content_hash")
    if not cloudevent and given and given != _hashing.content_hash(event.event_type, event.payload):
        problems.append("warning: content_hash does not match event_type and payload (readers trust it for dedup)")
    return problems
