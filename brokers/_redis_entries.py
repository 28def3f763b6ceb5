"""Stream entries as the Redis reader returns them, turned into deliveries.

redis-py turns every entry of an XREADGROUP, XCLAIM, XAUTOCLAIM or XRANGE reply into a tuple and a
dict of its fields: about 2 µs an entry on the bench machine, as much again as reading it. The
broker's client keeps those replies as the reader returns them (`keep_raw_replies`), and this module
reads them directly. An entry is `[id, [field, value, field, value, ...]]`, or `[id, None]` when it
was deleted while pending; an entry that XCLAIM could not find may come as None.

The fields of an entry: `event` holds the envelope; `key` (optional) its partition key; `ce_*`
fields carry CloudEvents binary-mode attributes. Anything else is ignored.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from brokers.base import Delivery, Settle, decode_record

__all__ = ["EVENT", "KEY", "entry_delivery", "has_event", "id_time", "keep_raw_replies"]

EVENT, KEY = b"event", b"key"
_RAW_COMMANDS = ("XREADGROUP", "XCLAIM", "XAUTOCLAIM", "XRANGE")


def keep_raw_replies(client: aioredis.Redis) -> None:
    """Make `client` return stream entries unparsed (RESP2 only: the broker's client speaks it)."""
    for command in _RAW_COMMANDS:
        client.set_response_callback(command, _as_is)


def _as_is(response: Any, **options: Any) -> Any:
    return response


def id_time(entry_id: str) -> float:
    """The time (seconds) in a stream entry id: its milliseconds part."""
    return int(entry_id.partition("-")[0]) / 1000


def has_event(fields: list[bytes] | None) -> bool:
    return fields is not None and EVENT in fields[::2]


def entry_delivery(topic: str, rid: str, fields: list[bytes], attempt: int, settle: Settle) -> Delivery:
    """The delivery of one entry (`fields` flat, as the reader returns them)."""
    key = headers = None
    if len(fields) == 2 and fields[0] == EVENT:  # what the broker writes without a key
        raw: bytes | None = fields[1]
    else:
        raw = None
        for i in range(0, len(fields) - 1, 2):
            name, value = fields[i], fields[i + 1]
            if name == EVENT:
                raw = value
            elif name == KEY:
                key = value.decode()
            elif name.startswith(b"ce_"):
                headers = headers or []
                headers.append((name.decode(), value))
    ts = id_time(rid)
    if raw is None:
        names = ", ".join(sorted(f.decode("utf-8", "replace") for f in fields[::2]))
        return Delivery(event=None, record_id=rid, topic=topic, key=key, attempt=attempt, timestamp=ts,
                        error=f"stream entry has no 'event' field (fields: {names})",
                        raw=repr(dict(zip(fields[::2], fields[1::2], strict=True))).encode(), settle=settle)
    event, error = decode_record(raw, topic=topic, partition=None, offset=rid, timestamp=ts, headers=headers)
    return Delivery(event=event, record_id=rid, topic=topic, key=key, attempt=attempt, error=error,
                    raw=raw if event is None else None, timestamp=ts, headers=headers, settle=settle)
