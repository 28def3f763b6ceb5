"""The AsyncAPI 3.0 document of the buses: servers, channels, one message per event type, operations.

Use `schemas.export.asyncapi_document(namespace)`; this module only arranges the catalog's schemas
(passed in, so nothing here builds them twice) into AsyncAPI's shape:

    servers      redis (each node's own), kafka (shared); placeholder hosts, the real ones come from
                 RINGRIFT_REDIS_URL / RINGRIFT_KAFKA_BOOTSTRAP
    channels     dataStream `<ns>:data`, stageStream `<ns>:stage` (Redis streams), crossProcess
                 `<ns>.events` (Kafka), deadLetters `<ns>.dlq` (Kafka) and deadLettersLocal `<ns>:dlq`
                 (Redis, when Kafka is off)
    components   schemas (the catalog's `$defs`, refs re-pointed), messages (one per event type, and
                 DeadLetter), the Kafka message binding (record key = partition key)

The schemas are JSON Schema 2020-12 written within the subset AsyncAPI's default schema format
(draft 07 based) reads alike: `allOf`, `anyOf`, `const`, `enum`, `properties`, `$ref`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEAD_LETTER_SCHEMA", "KAFKA_BINDING_VERSION", "build_document"]

KAFKA_BINDING_VERSION = "0.5.0"
_SCHEMAS = "#/components/schemas/"
_MESSAGES = "#/components/messages/"

# A mirror of coordination.dlq.DeadLetter (schemas imports nothing from coordination);
# tests/unit/test_schema_export.py checks it against msgspec's schema of the real Struct.
DEAD_LETTER_SCHEMA: dict[str, Any] = {
    "title": "DeadLetter",
    "description": "What could not be handled, why, and where it came from. New fields get defaults.",
    "type": "object",
    "required": ["dead_letter_id", "stage"],
    "properties": {
        "dead_letter_id": {"type": "string"},
        "stage": {"type": "string", "enum": ["crash", "decode", "handle", "publish", "timeout", "validate"],
                  "description": "decode: unreadable record; validate: unknown type under strict validation; "
                                 "handle: a handler raised on every attempt; timeout; crash: delivered too "
                                 "many times; publish: a spooled record refused."},
        "event": {"anyOf": [{"$ref": _SCHEMAS + "Envelope"}, {"type": "null"}], "default": None,
                  "description": "The original envelope, when it could be decoded."},
        "raw": {"anyOf": [{"type": "string", "contentEncoding": "base64"}, {"type": "null"}], "default": None,
                "description": "The original bytes (base64) when the record could not be decoded."},
        "bus": {"type": "string", "default": "", "description": "data | stage | cross"},
        "topic": {"type": "string", "default": ""},
        "record_id": {"type": "string", "default": ""},
        "partition": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "consumer_group": {"type": "string", "default": ""},
        "handler": {"type": "string", "default": ""},
        "exception_type": {"type": "string", "default": ""},
        "message": {"type": "string", "default": ""},
        "traceback": {"type": "string", "default": ""},
        "attempts": {"type": "integer", "default": 0},
        "first_failure_at": {"type": "number", "default": 0.0},
        "last_failure_at": {"type": "number", "default": 0.0},
        "node_id": {"type": "string", "default": ""},
    },
}

_DESCRIPTION = """\
Events of the RingRift coordination layer. A record's value is the UTF-8 JSON envelope (only
`event_type` and `payload` are required; readers fill in the rest). On Redis streams the entry's
field `event` holds the JSON and an optional field `key` the partition key; on Kafka the record value
is the JSON and the record key the partition key. CloudEvents 1.0 (structured, or Kafka binary mode
with `ce_*` headers) is accepted too. `event_type` is the canonical NAME; the original lowercase
values are accepted and normalised."""


def _repoint(schema: Any) -> Any:
    """The catalog's `#/$defs/X` refs as `#/components/schemas/X`."""
    if isinstance(schema, dict):
        return {key: (_SCHEMAS + value.removeprefix("#/$defs/") if key == "$ref" and isinstance(value, str)
                      else _repoint(value)) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_repoint(item) for item in schema]
    return schema


def _message(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": name,
        "summary": schema.get("description", ""),
        "contentType": "application/json",
        "payload": {"$ref": _SCHEMAS + name},
        "correlationId": {"$ref": "#/components/correlationIds/correlationId"},
        "bindings": {"$ref": "#/components/messageBindings/partitionKey"},
    }
    if schema.get("x-category"):
        message["x-category"] = schema["x-category"]
    return message


def _channel(address: str, server: str, title: str, description: str, names: list[str]) -> dict[str, Any]:
    return {
        "address": address, "title": title, "description": description,
        "servers": [{"$ref": f"#/servers/{server}"}],
        "messages": {name: {"$ref": _MESSAGES + name} for name in names},
    }


def _operation(action: str, channel: str, summary: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary, **extra}


def build_document(catalog: dict[str, Any], *, namespace: str = "ringrift",
                   version: str = "1.0.0") -> dict[str, Any]:
    """The AsyncAPI 3.0 document for `catalog` (from `catalog_json_schema()`) under `namespace`."""
    defs: dict[str, Any] = catalog["$defs"]
    names = [ref["$ref"].removeprefix("#/$defs/") for ref in catalog["oneOf"]]
    stage_names = [name for name in names if defs[name].get("x-stage-stream")]
    group = {"type": "string", "description": "`<node_id>.<service_name>`: one consumer group per router."}
    messages = {name: _message(name, defs[name]) for name in names}
    messages["DeadLetter"] = {
        "name": "DeadLetter", "title": "DeadLetter", "contentType": "application/json",
        "summary": "A record that could not be handled, with the failure and where it came from.",
        "payload": {"$ref": _SCHEMAS + "DeadLetter"},
    }
    channels = {
        "dataStream": _channel(f"{namespace}:data", "redis", "Data bus (per node)",
                               "Redis stream: every event published on the node.", names),
        "stageStream": _channel(f"{namespace}:stage", "redis", "Stage bus (per node)",
                                "Redis stream: the events that complete a pipeline stage.", stage_names),
        "crossProcess": _channel(f"{namespace}.events", "kafka", "Cross-process bus (cluster)",
                                 "Kafka topic shared by every node. Record key: the partition key.", names),
        "deadLetters": _channel(f"{namespace}.dlq", "kafka", "Dead letters",
                                "Kafka topic of dead letters.", ["DeadLetter"]),
        "deadLettersLocal": _channel(f"{namespace}:dlq", "redis", "Dead letters (no Kafka)",
                                     "Redis stream of dead letters, used when Kafka is off.", ["DeadLetter"]),
    }
    operations = {
        "publishData": _operation("send", "dataStream", "Publish an event on a node's data bus."),
        "consumeData": _operation("receive", "dataStream", "Consume the data bus in a consumer group."),
        "publishStage": _operation("send", "stageStream", "Publish a stage-completion event."),
        "consumeStage": _operation("receive", "stageStream", "Consume the stage bus in a consumer group."),
        "publishCross": _operation("send", "crossProcess", "Publish an event to every node."),
        "consumeCross": _operation("receive", "crossProcess", "Consume the cross-process topic in a group.",
                                   bindings={"kafka": {"groupId": group, "bindingVersion": KAFKA_BINDING_VERSION}}),
        "readDeadLetters": _operation("receive", "deadLetters", "Read dead letters (coord dlq list/show).",
                                      messages=[{"$ref": "#/channels/deadLetters/messages/DeadLetter"}]),
        "readDeadLettersLocal": _operation(
            "receive", "deadLettersLocal", "Read dead letters when Kafka is off.",
            messages=[{"$ref": "#/channels/deadLettersLocal/messages/DeadLetter"}]),
    }
    return {
        "asyncapi": "3.0.0",
        "id": f"urn:ringrift:{namespace}:coordination",
        "info": {"title": "RingRift coordination events", "version": version,
                 "description": _DESCRIPTION},
        "defaultContentType": "application/json",
        "servers": {
            "redis": {"host": "127.0.0.1:6379", "protocol": "redis", "title": "Node Redis",
                      "description": "Each node's own Redis (RINGRIFT_REDIS_URL); placeholder host."},
            "kafka": {"host": "127.0.0.1:9092", "protocol": "kafka", "title": "Cluster Kafka",
                      "description": "The shared Kafka cluster (RINGRIFT_KAFKA_BOOTSTRAP); placeholder host."},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {**_repoint(defs), "DeadLetter": DEAD_LETTER_SCHEMA},
            "messages": messages,
            "correlationIds": {"correlationId": {
                "description": "Groups the events of one workflow.",
                "location": "$message.payload#/correlation_id"}},
            "messageBindings": {"partitionKey": {"kafka": {
                "key": {"type": "string", "description": "The partition key: the publisher's key, else the "
                        "payload's config_key or config, else the event type. Events of one key stay in order."},
                "bindingVersion": KAFKA_BINDING_VERSION}}},
        },
    }
