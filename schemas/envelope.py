"""The event envelope on the wire: `RouterEvent`, `encode`, `decode`, `content_hash`.

A record's value is UTF-8 JSON of the envelope. Any client can publish: only `event_type` and
`payload` are required; `decode` fills the rest deterministically (the same record read twice gets
the same `event_id`, derived from its position when the position is known). CloudEvents 1.0 is
accepted too, structured (JSON with `specversion`) or in Kafka binary mode (`ce_*` headers).

Schema evolution rules (tested in tests/unit/test_envelope.py with an old and a new reader):
1. A new field always has a default, so an old record decodes with a new reader.
2. A reader ignores fields it does not know, so a new record decodes with an old reader.
3. A field is never retyped, renamed or reused for another meaning; it is deprecated and left in place.
4. `schema_version` is bumped when the meaning of the envelope changes; readers accept any version
   they can decode under rules 1-3 and never refuse a record for a higher version alone.

`target_group` (added with default None, so older records and readers are unaffected) addresses an
event to one consumer group: every other group acknowledges and skips it. A dead-letter re-drive uses
it so that only the group that failed handles the event again. It is written only when set.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from schemas import content_hash as _hashing
from schemas.events import normalize_event_type

__all__ = [
    "SCHEMA_VERSION",
    "DecodeError",
    "EnvelopeError",
    "EventSource",
    "RouterEvent",
    "content_hash",
    "decode",
    "encode",
    "new_trace_id",
]

SCHEMA_VERSION = 1
# Event ids derived from a record's position or bytes live in this UUID namespace (uuid5).
_ID_NAMESPACE = uuid.UUID("6f1c1f3e-8a55-4c1e-9f7a-52b1d0c0ffee")


class EventSource(enum.StrEnum):
    """Which bus an event came from."""

    DATA_BUS = "data_bus"
    STAGE_BUS = "stage_bus"
    CROSS_PROCESS = "cross_process"
    ROUTER = "router"


class RouterEvent(msgspec.Struct, kw_only=True):
    """One event. `event_type` is the canonical NAME (see `schemas.events.normalize_event_type`)."""

    event_type: str
    payload: dict[str, Any] = {}
    timestamp: float = 0.0
    source: str = ""
    origin: EventSource = EventSource.ROUTER
    event_id: str = ""
    trace_id: str = ""
    correlation_id: str = ""
    parent_event_id: str = ""
    content_hash: str = ""
    schema_version: int = SCHEMA_VERSION
    target_group: str | None = None  # keep it last: `encode` leaves it out when None

    @classmethod
    def new(cls, event_type: Any, payload: Mapping[str, Any] | None = None, source: str = "",
            **fields: Any) -> RouterEvent:
        """A fresh event: normalised type, new UUID, now, a new trace id, its content hash."""
        name = normalize_event_type(event_type)
        body = dict(payload) if payload else {}
        if not fields:  # the common case, without the look-ups below
            event_id, trace_id = _new_ids()
            return cls(event_type=name, payload=body, timestamp=time.time(), source=source, event_id=event_id,
                       trace_id=trace_id, content_hash=_hashing.content_hash(name, body))
        if not fields.get("event_id") or not fields.get("trace_id"):
            event_id, trace_id = _new_ids()
            fields.setdefault("event_id", event_id)
            if not fields.get("trace_id"):
                fields["trace_id"] = trace_id
        fields.setdefault("timestamp", time.time())
        fields.setdefault("content_hash", _hashing.content_hash(name, body))
        return cls(event_type=name, payload=body, source=source, **fields)


def _new_ids() -> tuple[str, str]:
    """A random (version 4) UUID and a trace id, from one call for random bytes: `uuid.uuid4()` twice
    costs more than the rest of building an event."""
    h = os.urandom(32).hex()
    # version nibble 4; variant bits 10 (the nibble is one of 8, 9, a, b)
    event_id = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"
    return event_id, h[32:]


class EnvelopeError(ValueError):
    """Root of the envelope's errors."""


class DecodeError(EnvelopeError):
    """A record that is not an event we can read. `raw` keeps its bytes, `reason` says why."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def new_trace_id() -> str:
    """32 lowercase hex characters, usable as a W3C trace-context trace id."""
    return uuid.uuid4().hex


def content_hash(event_type: Any, payload: Mapping[str, Any] | None) -> str:
    """SHA-256 hex of the JCS canonical JSON of the normalised type and the payload (see content_hash)."""
    body = payload if isinstance(payload, dict) else dict(payload or {})
    return _hashing.content_hash(normalize_event_type(event_type, strict=False), body)


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(RouterEvent)
_any_decoder = msgspec.json.Decoder()


_UNTARGETED_TAIL = b',"target_group":null}'


def encode(event: RouterEvent) -> bytes:
    """The event as UTF-8 JSON bytes (without `target_group` when it is None)."""
    data = _encoder.encode(event)
    # target_group is the last field, so an untargeted event ends with exactly this tail
    if data.endswith(_UNTARGETED_TAIL):
        return data[: -len(_UNTARGETED_TAIL)] + b"}"
    return data


def decode(data: bytes, *, topic: str | None = None, partition: int | None = None,
           offset: int | str | None = None,
           headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None = None,
           timestamp: float | None = None) -> RouterEvent:
    """Read one record: our envelope, a minimal foreign record, or a CloudEvent (structured or binary).

    `topic`/`partition`/`offset` say where the record sits; they make derived ids stable. `timestamp`
    (seconds) is the broker's record time, used when the record carries none. Raises `DecodeError`.
    """
    if headers:
        ce = _cloudevent_headers(headers)
        if ce:
            return _from_binary_cloudevent(ce, data, topic, partition, offset, timestamp)
    try:
        event = _envelope_decoder.decode(data)
    except msgspec.DecodeError:
        return _decode_generic(data, topic, partition, offset, timestamp)
    if event.event_id and event.content_hash:
        if not event.trace_id:
            event.trace_id = uuid.UUID(_derived_id(event.event_id, data)).hex
        return event
    return _complete(event, data, topic, partition, offset, timestamp)


def _decode_generic(data: bytes, topic: str | None, partition: int | None, offset: int | str | None,
                    timestamp: float | None) -> RouterEvent:
    try:
        obj = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not JSON: {exc}", data) from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {type(obj).__name__}", data)
    if "specversion" in obj:
        return _from_structured_cloudevent(obj, data, topic, partition, offset, timestamp)
    if "event_type" not in obj:
        raise DecodeError("missing field 'event_type' (or a CloudEvents 'specversion')", data)
    try:  # the JSON is an object with event_type but some field has the wrong type: say which
        msgspec.convert(obj, RouterEvent)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid envelope: {exc}", data) from None
    raise DecodeError("invalid envelope", data)  # pragma: no cover - convert accepted what decode refused


def _complete(event: RouterEvent, data: bytes, topic: str | None, partition: int | None,
              offset: int | str | None, timestamp: float | None) -> RouterEvent:
    """Fill what a foreign publisher left out, the same way every time for the same record."""
    try:
        event.event_type = normalize_event_type(event.event_type, strict=False)
    except ValueError as exc:
        raise DecodeError(f"invalid event_type: {exc}", data) from None
    if not event.event_id:
        event.event_id = _derived_id(_position(topic, partition, offset), data)
    if not event.timestamp and timestamp is not None:
        event.timestamp = timestamp
    if not event.trace_id:
        event.trace_id = uuid.UUID(event.event_id).hex if _is_uuid(event.event_id) else \
            uuid.UUID(_derived_id(event.event_id, data)).hex
    if not event.content_hash:
        event.content_hash = _hashing.content_hash(event.event_type, event.payload)
    return event


def _from_structured_cloudevent(obj: dict[str, Any], data: bytes, topic: str | None,
                                partition: int | None, offset: int | str | None,
                                timestamp: float | None) -> RouterEvent:
    payload = obj.get("data", {})
    if isinstance(payload, str) and obj.get("datacontenttype", "").endswith("json"):
        try:
            payload = _any_decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"CloudEvents data is not JSON: {exc}", data) from None
    return _from_cloudevent_fields(obj, payload, data, topic, partition, offset, timestamp)


def _from_binary_cloudevent(ce: dict[str, str], data: bytes, topic: str | None, partition: int | None,
                            offset: int | str | None, timestamp: float | None) -> RouterEvent:
    try:
        payload = _any_decoder.decode(data) if data else {}
    except msgspec.DecodeError as exc:
        raise DecodeError(f"CloudEvents binary-mode value is not JSON: {exc}", data) from None
    return _from_cloudevent_fields(ce, payload, data, topic, partition, offset, timestamp)


def _from_cloudevent_fields(ce: Mapping[str, Any], payload: Any, data: bytes, topic: str | None,
                            partition: int | None, offset: int | str | None,
                            timestamp: float | None) -> RouterEvent:
    if str(ce.get("specversion", "")) != "1.0":
        raise DecodeError(f"unsupported CloudEvents specversion {ce.get('specversion')!r} (want '1.0')", data)
    for name in ("type", "id", "source"):
        if not isinstance(ce.get(name), str) or not ce[name]:
            raise DecodeError(f"CloudEvents attribute {name!r} is missing or not a string", data)
    if not isinstance(payload, dict):
        raise DecodeError(f"CloudEvents data must be a JSON object, got {type(payload).__name__}", data)
    when = timestamp or 0.0
    if ce.get("time"):
        try:
            when = datetime.fromisoformat(str(ce["time"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise DecodeError(f"CloudEvents 'time' is not RFC 3339: {ce['time']!r}", data) from None
    trace_id = ""
    parts = str(ce.get("traceparent", "")).split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        trace_id = parts[1]
    event = RouterEvent(
        event_type=ce["type"], payload=payload, timestamp=when, source=ce["source"],
        event_id=ce["id"], trace_id=trace_id, correlation_id=str(ce.get("correlationid", "")),
        parent_event_id=str(ce.get("parenteventid", "")),
    )
    return _complete(event, data, topic, partition, offset, timestamp)


def _cloudevent_headers(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    ce: dict[str, str] = {}
    for name, value in items:
        if name.startswith("ce_"):
            ce[name[3:]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return ce if "specversion" in ce else {}


def _position(topic: str | None, partition: int | None, offset: int | str | None) -> str | None:
    if offset is None:
        return None
    return f"{topic or ''}/{'' if partition is None else partition}/{offset}"


def _derived_id(position: str | None, data: bytes) -> str:
    """A uuid5 from the record's position when known, else from its bytes."""
    name = position if position is not None else data.decode("utf-8", "replace")
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
