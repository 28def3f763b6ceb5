"""Dead letters: what could not be handled, why, and where it came from. Nothing is dropped silently.

A `DeadLetter` is written as JSON to the dead-letter topic (`<ns>.dlq` on Kafka, or the Redis stream
`<ns>:dlq` when Kafka is off) by `DeadLetterQueue.put`, and read back with `list(...)` / `get(id)`.

    stage     decode     the record is not an event we can read (`raw` keeps its bytes, base64 in JSON)
              validate   unknown event type under strict validation
              handle     a handler raised on every attempt
              timeout    a handler ran past the handler timeout on its last attempt
              crash      the record was delivered more than max_deliveries times (its process kept dying)

What was done about each letter (re-driven, abandoned, purged) is kept apart: coordination.dlq_status.
"""

from __future__ import annotations

import time
import traceback as _traceback
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

import msgspec

from brokers.base import Broker, Delivery
from schemas.envelope import RouterEvent

__all__ = ["MAX_TRACEBACK_CHARS", "DeadLetter", "DeadLetterQueue", "Stage", "dead_letter_for"]

Stage = Literal["decode", "validate", "handle", "timeout", "crash", "publish"]  # publish: a spooled record refused
MAX_TRACEBACK_CHARS = 8192


class DeadLetter(msgspec.Struct, kw_only=True):
    """One dead letter. New fields get defaults (the envelope's evolution rules apply here too)."""

    dead_letter_id: str
    stage: Stage
    event: RouterEvent | None = None  # the original envelope, when it could be decoded
    raw: bytes | None = None  # the original bytes otherwise
    bus: str = ""  # data | stage | cross
    topic: str = ""
    record_id: str = ""
    partition: int | None = None
    consumer_group: str = ""
    handler: str = ""
    exception_type: str = ""
    message: str = ""
    traceback: str = ""
    attempts: int = 0
    first_failure_at: float = 0.0
    last_failure_at: float = 0.0
    node_id: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def _bounded_traceback(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > MAX_TRACEBACK_CHARS:  # keep the end: the innermost frames and the message
        text = "...(truncated)\n" + text[-MAX_TRACEBACK_CHARS:]
    return text


def dead_letter_for(delivery: Delivery, *, stage: Stage, bus: str, group: str, node_id: str,
                    exc: BaseException | None = None, message: str = "", handler: str = "",
                    attempts: int | None = None, first_failure_at: float | None = None) -> DeadLetter:
    """A dead letter for `delivery`: the event (or raw bytes), its position and the failure."""
    now = time.time()
    return DeadLetter(
        dead_letter_id=str(uuid.uuid4()), stage=stage, event=delivery.event,
        raw=delivery.raw if delivery.event is None else None, bus=bus, topic=delivery.topic,
        record_id=delivery.record_id, partition=delivery.partition, consumer_group=group, handler=handler,
        exception_type=type(exc).__name__ if exc is not None else "",
        message=message or (str(exc) if exc is not None else ""), traceback=_bounded_traceback(exc),
        attempts=delivery.attempt if attempts is None else attempts,
        first_failure_at=first_failure_at or now, last_failure_at=now, node_id=node_id,
    )


class DeadLetterQueue:
    """The dead-letter topic on one broker: `put` one, `list` with filters, `get` by id."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.broker = broker
        self.topic = topic

    async def put(self, letter: DeadLetter) -> str:
        """Write one dead letter; returns its record id once the broker acknowledged it."""
        return await self.broker.publish_raw(self.topic, _encoder.encode(letter), key=letter.dead_letter_id)

    async def _all(self, since: datetime | None = None) -> AsyncIterator[DeadLetter]:
        async for record in self.broker.read(self.topic, since=since):
            if record.raw is None:
                continue  # not written by us (a foreign event on the topic)
            try:
                yield _decoder.decode(record.raw)
            except msgspec.DecodeError:
                continue

    async def list(self, *, stage: Stage | None = None, event_type: str | None = None,
                   consumer_group: str | None = None, handler: str | None = None,
                   since: datetime | None = None, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters oldest first, filtered by every argument given."""
        found: list[DeadLetter] = []
        async for letter in self._all(since):
            if stage is not None and letter.stage != stage:
                continue
            if event_type is not None and (letter.event is None or letter.event.event_type != event_type):
                continue
            if consumer_group is not None and letter.consumer_group != consumer_group:
                continue
            if handler is not None and letter.handler != handler:
                continue
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
        return found

    async def get(self, dead_letter_id: str) -> DeadLetter | None:
        async for letter in self._all():
            if letter.dead_letter_id == dead_letter_id:
                return letter
        return None
