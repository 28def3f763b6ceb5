"""The envelope on the wire: round trips, foreign records, CloudEvents, clear errors, schema evolution."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from schemas.envelope import DecodeError, EventSource, RouterEvent, content_hash, decode, encode


def test_new_fills_id_time_trace_and_hash() -> None:
    event = RouterEvent.new("training_completed", {"config": "hex8_2p"}, source="trainer")
    assert event.event_type == "TRAINING_COMPLETED"
    assert uuid.UUID(event.event_id).version == 4
    assert len(event.trace_id) == 32 and int(event.trace_id, 16)
    assert event.timestamp > 1.7e9
    assert event.content_hash == content_hash("TRAINING_COMPLETED", {"config": "hex8_2p"})
    assert event.origin is EventSource.ROUTER and event.schema_version == 1


def test_round_trip_keeps_every_field() -> None:
    event = RouterEvent.new("MODEL_PROMOTED", {"model_path": "m.pth", "elo": 1510.5}, source="promo",
                            correlation_id="req-1", parent_event_id="p-1")
    assert decode(encode(event)) == event


def test_wire_format_is_plain_json_with_named_fields() -> None:
    wire = json.loads(encode(RouterEvent.new("NEW_GAMES_AVAILABLE", {"n": 1})))
    assert set(wire) == {"event_type", "payload", "timestamp", "source", "origin", "event_id", "trace_id",
                         "correlation_id", "parent_event_id", "content_hash", "schema_version"}
    assert wire["origin"] == "router"


def test_minimal_foreign_record_is_completed_deterministically() -> None:
    raw = b'{"event_type": "new_games", "payload": {"count": 3}}'
    first = decode(raw, topic="ringrift:data", offset="1700000000000-0", timestamp=1700000000.0)
    again = decode(raw, topic="ringrift:data", offset="1700000000000-0", timestamp=1700000000.0)
    elsewhere = decode(raw, topic="ringrift:data", offset="1700000000001-0")
    assert first == again
    assert first.event_type == "NEW_GAMES_AVAILABLE"
    assert first.event_id != elsewhere.event_id
    assert first.timestamp == 1700000000.0
    assert first.content_hash == content_hash("NEW_GAMES_AVAILABLE", {"count": 3})
    assert decode(raw).event_id == decode(raw).event_id  # no position: derived from the bytes


def test_structured_cloudevent_maps_onto_the_envelope() -> None:
    raw = json.dumps({
        "specversion": "1.0", "type": "MODEL_PROMOTED", "id": "ce-1", "source": "/trainer/7",
        "time": "2026-01-01T00:00:00Z", "data": {"model_path": "m.pth"},
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "correlationid": "req-9",
    }).encode()
    event = decode(raw)
    assert (event.event_type, event.event_id, event.source) == ("MODEL_PROMOTED", "ce-1", "/trainer/7")
    assert event.payload == {"model_path": "m.pth"}
    assert event.timestamp == 1767225600.0
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.correlation_id == "req-9"


def test_binary_mode_cloudevent_from_kafka_headers() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"training_started"), ("ce_id", b"b-1"),
               ("ce_source", b"/job/3"), ("content-type", b"application/json")]
    event = decode(b'{"config": "sq8_4p"}', headers=headers, topic="t", partition=0, offset=5)
    assert (event.event_type, event.event_id, event.payload) == ("TRAINING_STARTED", "b-1", {"config": "sq8_4p"})


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"payload": {}}', "missing field 'event_type'"),
    (b'{"event_type": 5, "payload": {}}', "Expected `str`, got `int` - at `$.event_type`"),
    (b'{"event_type": "X", "payload": [1]}', "at `$.payload`"),
    (b'{"event_type": "", "payload": {}}', "invalid event_type"),
    (b'{"specversion": "0.3", "type": "X", "id": "1", "source": "s"}', "unsupported CloudEvents specversion"),
    (b'{"specversion": "1.0", "type": "X", "source": "s"}', "'id' is missing"),
    (b'{"specversion": "1.0", "type": "X", "id": "1", "source": "s", "data": 3}', "must be a JSON object"),
    (b'{"specversion": "1.0", "type": "X", "id": "1", "source": "s", "time": "yesterday"}', "not RFC 3339"),
])
def test_bad_records_raise_a_decode_error_that_says_why_and_keeps_the_bytes(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(raw)
    assert reason in caught.value.reason
    assert caught.value.raw == raw


# Schema evolution: an "old" reader without a field added later, and a "new" writer with one more field.
class _OldEvent(msgspec.Struct, kw_only=True):
    event_type: str
    payload: dict = {}
    event_id: str = ""
    content_hash: str = ""


class _NewerEvent(RouterEvent, kw_only=True):
    priority: str = "normal"


def test_old_reader_accepts_records_from_a_newer_writer() -> None:
    newer = _NewerEvent(event_type="TRAINING_COMPLETED", payload={"a": 1}, event_id="e1", content_hash="h",
                        priority="high")
    raw = msgspec.json.encode(newer)
    old = msgspec.json.decode(raw, type=_OldEvent)
    current = decode(raw)
    assert (old.event_type, old.event_id) == ("TRAINING_COMPLETED", "e1")
    assert (current.event_id, current.payload) == ("e1", {"a": 1})


def test_new_reader_accepts_records_from_an_older_writer() -> None:
    raw = msgspec.json.encode(_OldEvent(event_type="TRAINING_COMPLETED", payload={"a": 1}, event_id="e1"))
    newer = msgspec.json.decode(raw, type=_NewerEvent)
    current = decode(raw)
    assert newer.priority == "normal" and newer.schema_version == 1
    assert current.event_id == "e1" and current.content_hash == content_hash("TRAINING_COMPLETED", {"a": 1})
