"""The exported contract (schemas.export): JSON Schemas checked by an independent validator, AsyncAPI.

jsonschema (not msgspec) validates the schemas against the 2020-12 meta-schema and real events against
the schemas. The official AsyncAPI 3 JSON Schema cannot be downloaded here (no network), so the
AsyncAPI document is checked for what can be checked locally: its top-level shape, that every `$ref`
resolves within the document, that operations point at existing channels and their messages, and
that its message payload schemas validate real events.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import msgspec
import pytest

from coordination.dlq import DeadLetter
from schemas._asyncapi import DEAD_LETTER_SCHEMA
from schemas.envelope import RouterEvent, encode
from schemas.events import KNOWN_EVENT_TYPES, DataEventType, StageEvent, event_category
from schemas.export import (
    asyncapi_document,
    catalog_json_schema,
    check_event,
    dump,
    envelope_json_schema,
)
from schemas.payloads import PAYLOAD_TYPES

Validator = jsonschema.Draft202012Validator


@pytest.fixture(scope="module")
def envelope() -> Validator:
    schema = envelope_json_schema()
    Validator.check_schema(schema)
    return Validator(schema)


@pytest.fixture(scope="module")
def catalog() -> Validator:
    schema = catalog_json_schema()
    Validator.check_schema(schema)
    return Validator(schema)


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    return asyncapi_document()


def wire(event_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A real event as the router puts it on the wire, parsed back to JSON."""
    return json.loads(encode(RouterEvent.new(event_type, payload, source="test", **fields)))


REAL_EVENTS = [
    wire("DATA_SYNC_COMPLETED", {"config_key": "hex8_2p", "host": "gpu-1", "games_synced": 120, "duration": 3.5}),
    wire("TRAINING_FAILED", {"config": "sq8_2p", "error": "CUDA out of memory"}),
    wire("DAEMON_STATUS_CHANGED", {"daemon_name": "AUTO_SYNC", "old_status": "running", "new_status": "failed"}),
    wire("GAME_SYNCED", {"anything": [1, {"nested": True}]}),  # free-form payload
    wire("CANONICAL_SELFPLAY_COMPLETE", {"games": 5}),  # a stage-only event
    wire("new_games", {"host": "h", "new_games": 10}, correlation_id="wf-1"),  # normalised on publish
]
FOREIGN_RECORDS = [
    {"event_type": "TRAINING_COMPLETED", "payload": {"config": "hex8_2p", "epochs": 50}},
    {"event_type": "HOST_OFFLINE", "payload": {}},
    {"event_type": "TRAINING_COMPLETED", "payload": {"config": "hex8_2p", "epochs": 50},
     "timestamp": 1767225600, "source": "trainer", "origin": "router", "schema_version": 1,
     "extra_field_from_the_future": {"ok": True}},
]


def test_schemas_are_valid_draft_2020_12(envelope: Validator, catalog: Validator) -> None:
    for schema in (envelope.schema, catalog.schema):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Validator.check_schema(schema)  # raises SchemaError when not


def test_envelope_documents_required_and_optional_fields(envelope: Validator) -> None:
    defs = envelope.schema["$defs"]
    body = defs["Envelope"]
    assert body["required"] == ["event_type", "payload"]
    assert set(body["properties"]) == set(RouterEvent.__struct_fields__)
    assert all(prop.get("description") for prop in body["properties"].values())
    assert set(defs["EventType"]["enum"]) == KNOWN_EVENT_TYPES
    assert "lowercase" in defs["EventType"]["description"]
    assert defs["EventType"]["x-legacy-values"]["new_games"] == "NEW_GAMES_AVAILABLE"


def test_catalog_has_a_definition_per_event_type(catalog: Validator) -> None:
    schema = catalog.schema
    defs = schema["$defs"]
    assert len(KNOWN_EVENT_TYPES) == len(set(DataEventType.__members__) | set(StageEvent.__members__))
    assert {ref["$ref"].removeprefix("#/$defs/") for ref in schema["oneOf"]} == KNOWN_EVENT_TYPES
    for name in KNOWN_EVENT_TYPES:
        definition = defs[name]
        assert definition["properties"]["event_type"] == {"const": name}
        assert definition["x-category"] == event_category(name)
        payload = definition["properties"]["payload"]
        if name in PAYLOAD_TYPES:
            assert payload == {"$ref": f"#/$defs/{PAYLOAD_TYPES[name].__name__}Payload"}
        else:
            assert payload["type"] == "object"
    assert defs["DATA_SYNC_COMPLETED"]["x-category"] == "data_collection"


@pytest.mark.parametrize("event", REAL_EVENTS + FOREIGN_RECORDS, ids=lambda e: e["event_type"])
def test_real_and_foreign_events_are_valid(event: dict[str, Any], envelope: Validator,
                                           catalog: Validator) -> None:
    envelope.validate(event)
    catalog.validate(event)
    assert check_event(json.dumps(event).encode()) == []


BROKEN = {
    "missing event_type": {"payload": {}},
    "missing payload": {"event_type": "TRAINING_COMPLETED"},
    "payload is a list": {"event_type": "TRAINING_COMPLETED", "payload": [1, 2]},
    "payload is a string": {"event_type": "TRAINING_COMPLETED", "payload": "{}"},
    "empty event_type": {"event_type": "  ", "payload": {}},
    "event_type not a string": {"event_type": 7, "payload": {}},
    "timestamp a string": {"event_type": "HOST_OFFLINE", "payload": {}, "timestamp": "now"},
    "origin unknown": {"event_type": "HOST_OFFLINE", "payload": {}, "origin": "mars"},
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_envelopes_fail_both_schemas_and_the_checker(name: str, envelope: Validator,
                                                            catalog: Validator) -> None:
    record = BROKEN[name]
    assert not envelope.is_valid(record)
    assert not catalog.is_valid(record)
    assert [p for p in check_event(record) if not p.startswith("warning:")]


def test_typed_payload_errors_fail_the_catalog_but_not_the_envelope(envelope: Validator,
                                                                     catalog: Validator) -> None:
    wrong_type = wire("DATA_SYNC_COMPLETED", {"games_synced": 3})
    wrong_type["payload"]["games_synced"] = "x"
    missing = {"event_type": "TRAINING_FAILED", "payload": {"config": "hex8_2p"}}  # `error` is required
    for record in (wrong_type, missing):
        envelope.validate(record)
        assert not catalog.is_valid(record)
    error = jsonschema.exceptions.best_match(catalog.iter_errors(wrong_type))
    assert error is not None and "integer" in error.message
    assert any("games_synced" in p for p in check_event(wrong_type))
    assert any("error" in p for p in check_event(missing))


def test_the_catalog_is_strict_about_types_the_envelope_is_not(envelope: Validator, catalog: Validator) -> None:
    for record in ({"event_type": "MY_TEAM_EVENT", "payload": {}}, {"event_type": "new_games", "payload": {}}):
        envelope.validate(record)
        assert not catalog.is_valid(record)


def test_asyncapi_top_level_shape(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] and asyncapi["info"]["version"]
    assert {"servers", "channels", "operations", "components"} <= set(asyncapi)
    assert {"messages", "schemas"} <= set(asyncapi["components"])
    assert asyncapi["servers"]["redis"] == {**asyncapi["servers"]["redis"], "host": "127.0.0.1:6379",
                                            "protocol": "redis"}
    assert asyncapi["servers"]["kafka"]["host"] == "127.0.0.1:9092"
    assert asyncapi["servers"]["kafka"]["protocol"] == "kafka"
    assert set(asyncapi["components"]["messages"]) == KNOWN_EVENT_TYPES | {"DeadLetter"}
    key = asyncapi["components"]["messageBindings"]["partitionKey"]["kafka"]["key"]
    assert "partition key" in key["description"]
    component_name = re.compile(r"^[a-zA-Z0-9.\-_]+$")
    for section in asyncapi["components"].values():
        assert all(component_name.match(name) for name in section)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} leaves the document"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


@pytest.mark.parametrize("namespace", ["ringrift", "blue"])
def test_asyncapi_references_resolve(namespace: str) -> None:
    document = asyncapi_document(namespace)
    refs = _refs(document)
    assert refs and not [ref for ref in refs if ref.startswith("#/$defs/")]
    for ref in set(refs):
        _resolve(document, ref)
    for name, channel in document["channels"].items():
        assert channel["address"].startswith(namespace), name
        for server in channel["servers"]:
            assert server["$ref"].startswith("#/servers/")
        for message in channel["messages"].values():
            assert message["$ref"].startswith("#/components/messages/")
    for name, operation in document["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/") and _resolve(document, channel_ref)
        for message in operation.get("messages", []):  # a subset of its own channel's messages
            assert message["$ref"].startswith(channel_ref + "/messages/")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {f"{namespace}:data", f"{namespace}:stage", f"{namespace}.events", f"{namespace}.dlq"} <= addresses


def test_asyncapi_channels_carry_the_right_messages(asyncapi: dict[str, Any]) -> None:
    channels = asyncapi["channels"]
    assert set(channels["dataStream"]["messages"]) == KNOWN_EVENT_TYPES
    assert set(channels["crossProcess"]["messages"]) == KNOWN_EVENT_TYPES
    stage = set(channels["stageStream"]["messages"])
    assert {"DATA_SYNC_COMPLETED", "CANONICAL_SELFPLAY_COMPLETE"} <= stage < KNOWN_EVENT_TYPES
    assert set(channels["deadLetters"]["messages"]) == {"DeadLetter"}


def _payload_validator(document: dict[str, Any], message: str) -> Validator:
    payload_ref = document["components"]["messages"][message]["payload"]["$ref"]
    return Validator({**document, "$ref": payload_ref})


def test_asyncapi_payload_schemas_validate_events(asyncapi: dict[str, Any]) -> None:
    good = REAL_EVENTS[0]
    bad = json.loads(json.dumps(good))
    bad["payload"]["games_synced"] = "x"
    validator = _payload_validator(asyncapi, "DATA_SYNC_COMPLETED")
    validator.validate(good)
    assert not validator.is_valid(bad)


def test_dead_letter_schema_mirrors_coordination_dlq(asyncapi: dict[str, Any]) -> None:
    real = msgspec.json.schema(DeadLetter)["$defs"]["DeadLetter"]
    assert set(DEAD_LETTER_SCHEMA["properties"]) == set(real["properties"])
    assert DEAD_LETTER_SCHEMA["required"] == real["required"]
    strip = {"description", "type"}  # the mirror adds docs and an explicit string type to the enum
    for name, prop in real["properties"].items():
        mirror = {k: v for k, v in DEAD_LETTER_SCHEMA["properties"][name].items() if k not in strip}
        expected = json.loads(json.dumps(prop).replace("#/$defs/RouterEvent", "#/components/schemas/Envelope"))
        assert mirror == {k: v for k, v in expected.items() if k not in strip} or name == "stage", name
    assert set(DEAD_LETTER_SCHEMA["properties"]["stage"]["enum"]) == set(real["properties"]["stage"]["enum"])
    letters = [
        DeadLetter(dead_letter_id="d1", stage="handle", event=RouterEvent.new("HOST_OFFLINE", {}), bus="cross",
                   partition=3, attempts=5, message="boom"),
        DeadLetter(dead_letter_id="d2", stage="decode", raw=b"\xff not json"),
    ]
    validator = _payload_validator(asyncapi, "DeadLetter")
    for letter in letters:
        validator.validate(json.loads(msgspec.json.encode(letter)))


def test_check_event_accepts_cloudevents_and_legacy_spellings() -> None:
    cloudevent = {"specversion": "1.0", "type": "TRAINING_COMPLETED", "id": "abc", "source": "/trainer",
                  "time": "2026-01-01T00:00:00Z", "data": {"config": "hex8_2p", "epochs": 3}}
    assert check_event(json.dumps(cloudevent)) == []
    no_id = {key: value for key, value in cloudevent.items() if key != "id"}
    assert any("'id'" in problem for problem in check_event(no_id))
    legacy = check_event({"event_type": "new_games", "payload": {}})
    assert legacy and all(problem.startswith("warning:") for problem in legacy)
    assert "NEW_GAMES_AVAILABLE" in legacy[0]


def test_check_event_unknown_type_is_a_warning_unless_strict() -> None:
    record = {"event_type": "DATA_SYNC_COMPLETE", "payload": {}}
    lenient = check_event(record)
    assert len(lenient) == 1 and lenient[0].startswith("warning: unknown event type")
    assert "DATA_SYNC_COMPLETED" in lenient[0]
    strict = check_event(record, strict=True)
    assert len(strict) == 1 and strict[0].startswith("unknown event type") and "DATA_SYNC_COMPLETED" in strict[0]


def test_check_event_reports_input_problems_in_words() -> None:
    assert check_event(b"{not json")[0].startswith("not JSON")
    assert check_event(b"[1, 2]") == ["not a JSON object: got an array"]
    assert check_event("")[0].startswith("not JSON")
    problems = check_event({"payload": 3, "schema_version": True})
    assert "missing field 'event_type' (the event type's canonical NAME)" in problems
    assert "'payload' must be an object, got an integer" in problems
    assert "'schema_version' must be an integer, got a boolean" in problems


def test_check_event_warns_on_what_only_lenient_readers_accept() -> None:
    numeric_string = check_event({"event_type": "DATA_SYNC_COMPLETED", "payload": {"games_synced": "5"}})
    assert len(numeric_string) == 1 and numeric_string[0].startswith("warning:")
    tampered = wire("HOST_OFFLINE", {"host": "a"})
    tampered["payload"]["host"] = "b"
    assert next(p for p in check_event(tampered) if "content_hash" in p).startswith("warning:")


def test_dump_is_sorted_and_stable() -> None:
    text = dump({"b": 1, "a": {"d": 2, "c": [3]}})
    assert text == dump(json.loads(text))
    assert text.index('"a"') < text.index('"b"') and text.index('"c"') < text.index('"d"')
    assert dump(catalog_json_schema()) == dump(catalog_json_schema())
