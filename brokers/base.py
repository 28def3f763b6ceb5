"""The broker contract: publish, consume in a group with ack/nack, read a range, ensure a topic, close;
and for operators: a group's lag and moving a group's position back in time (replay).

Every backend (`memory.py`, `redis_streams.py`, `kafka.py`) implements `Broker` and passes the one
conformance suite in tests/integration/test_broker_conformance.py. Backends import this module,
`brokers.errors`, `brokers.settings`, `schemas` and their own client library; never each other.

    async with brokers.connect("redis://127.0.0.1:6379/0") as broker:
        await broker.ensure_topic("ringrift:data")
        record_id = await broker.publish("ringrift:data", RouterEvent.new("TRAINING_COMPLETED", {}))
        async for delivery in broker.consume("ringrift:data", group="trainer"):
            ...                      # delivery.event is None when the record could not be decoded
            await delivery.ack()     # or nack(): deliver again (attempt + 1)
        async for batch in broker.consume_batches("ringrift:data", group="trainer", batch_size=128):
            ...                      # a list of deliveries: what one read handed over
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from brokers.errors import RecordTooLarge
from schemas.envelope import DecodeError, RouterEvent, decode, encode

__all__ = ["Broker", "Capabilities", "Delivery", "GroupLag", "PartitionLag", "Record", "StartPosition", "ack_all"]

StartPosition = Literal["earliest", "latest"]
Settle = Callable[["Delivery", bool], Awaitable[None]]


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees; the conformance suite reads it."""

    persistent: bool
    partitions: bool  # topics have several partitions (group members split them)
    attempt_counts: bool  # Delivery.attempt counts redeliveries across processes
    replay_by_time: bool = True


class Delivery:
    """One record handed to one member of a consumer group. `ack`/`nack` are idempotent."""

    __slots__ = ("_done", "_settle", "attempt", "error", "event", "headers", "key", "partition",
                 "raw", "record_id", "timestamp", "topic")

    def __init__(self, *, event: RouterEvent | None, record_id: str, topic: str, settle: Settle,
                 key: str | None = None, attempt: int = 1, error: str | None = None,
                 raw: bytes | None = None, partition: int | None = None, timestamp: float | None = None,
                 headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.event = event
        self.record_id = record_id
        self.topic = topic
        self.key = key
        self.attempt = attempt
        self.error = error  # why the record could not be decoded (event is None then)
        self.raw = raw  # the record's bytes when it could not be decoded
        self.partition = partition
        self.timestamp = timestamp
        self.headers = headers
        self._settle = settle
        self._done = False

    @property
    def settled(self) -> bool:
        return self._done

    async def ack(self) -> None:
        """Done with this record: it is not delivered to this group again. Redis and Kafka send acks
        in the background (coalesced); one that is lost (the broker went away) only means the record
        is delivered again, as after a crash before the ack."""
        if not self._done:
            self._done = True
            await self._settle(self, True)

    async def nack(self) -> None:
        """Not done: deliver this record again (to this or another member) with attempt + 1."""
        if not self._done:
            self._done = True
            await self._settle(self, False)

    def __repr__(self) -> str:
        what = self.event.event_type if self.event is not None else f"undecodable: {self.error}"
        return f"<Delivery {self.topic}@{self.record_id} attempt={self.attempt} {what}>"


async def ack_all(deliveries: Sequence[Delivery]) -> None:
    """Acknowledge many deliveries, in order. An ack of every backend returns without a round trip
    (Redis and Kafka send acks in the background), so one after the other costs less than a task
    each. Every ack is attempted; the first failure is raised."""
    failed: BaseException | None = None
    for delivery in deliveries:
        try:
            await delivery.ack()
        except Exception as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


@dataclass(frozen=True, slots=True)
class Record:
    """One record read for replay (no group involved)."""

    event: RouterEvent | None
    record_id: str
    timestamp: float
    key: str | None = None
    error: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Where one consumer group stands in one partition (Kafka) or stream (Redis: partition None)."""

    partition: int | None
    position: str | None  # the group's committed offset / last-delivered id; None: no position yet
    end: str  # the position after the newest record
    lag: int | None  # records after the group's position not yet delivered (None: the broker cannot say)
    pending: int = 0  # delivered to a member and not yet acknowledged


@dataclass(frozen=True, slots=True)
class GroupLag:
    """How far one consumer group is behind on one topic (`Broker.group_lag`)."""

    topic: str
    group: str
    partitions: tuple[PartitionLag, ...]
    members: int  # consumers currently in the group (Redis: those that read within the last seconds)

    @property
    def behind(self) -> int:
        """Records not yet delivered plus records delivered and not yet acknowledged."""
        return sum((p.lag or 0) + p.pending for p in self.partitions)


def decode_record(raw: bytes, *, topic: str, partition: int | None, offset: int | str,
                  timestamp: float | None, headers: Any = None) -> tuple[RouterEvent | None, str | None]:
    """(event, None) or (None, reason): backends never drop a record they cannot read."""
    try:
        return decode(raw, topic=topic, partition=partition, offset=offset, headers=headers,
                      timestamp=timestamp), None
    except DecodeError as exc:
        return None, exc.reason


def check_size(value: bytes, limit: int, topic: str) -> None:
    """Refuse a record above the size limit (every backend's publish_raw calls this)."""
    if len(value) > limit:
        raise RecordTooLarge(len(value), limit, topic)


class Broker(abc.ABC):
    """One connection to one broker. Use `async with` or `start()`/`close()`."""

    capabilities: Capabilities
    url: str

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (within the retry budget); raises BrokerUnavailable or AuthenticationFailed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is pending and disconnect. Idempotent."""

    @abc.abstractmethod
    async def ensure_topic(self, name: str, partitions: int = 1, *, compacted: bool = False) -> None:
        """Create the topic/stream if missing (existing ones are left as they are).

        `compacted`: only the newest record per key needs to be kept (Kafka `cleanup.policy=compact`:
        heartbeats, manifests, status tables). Readers fold records by key, newest wins, so a backend
        without compaction (Redis, memory) keeps every record and gives the same answer."""

    async def publish(self, topic: str, event: RouterEvent, key: str | None = None) -> str:
        """Append one event; returns its record id once the broker acknowledged it."""
        return await self.publish_raw(topic, encode(event), key)

    async def publish_batch(self, topic: str, events: Sequence[RouterEvent],
                            key: str | None = None) -> list[str]:
        """Append many events in as few round trips as the broker allows; ids in order."""
        return await self.publish_raw_batch(topic, [encode(e) for e in events], key)

    @abc.abstractmethod
    async def publish_raw(self, topic: str, value: bytes, key: str | None = None,
                          headers: Sequence[tuple[str, bytes]] | None = None) -> str:
        """Append already-encoded bytes (re-drives, bridges, tools); refuses oversized records."""

    @abc.abstractmethod
    async def publish_raw_batch(self, topic: str, values: Sequence[bytes],
                                key: str | None = None) -> list[str]:
        """Append many already-encoded records."""

    async def consume(self, topic: str, group: str, consumer: str | None = None, *,
                      start: StartPosition = "earliest", batch_size: int = 100,
                      claim_idle_ms: int = 30_000) -> AsyncIterator[Delivery]:
        """Deliveries for one member of `group`. Members share the work; a dead member's
        unacknowledged deliveries go to another member. Undecodable records come with event=None."""
        batches = self.consume_batches(topic, group, consumer, start=start, batch_size=batch_size,
                                       claim_idle_ms=claim_idle_ms)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for delivery in batch:
                    yield delivery

    @abc.abstractmethod
    def consume_batches(self, topic: str, group: str, consumer: str | None = None, *,
                        start: StartPosition = "earliest", batch_size: int = 100,
                        claim_idle_ms: int = 30_000) -> AsyncIterator[list[Delivery]]:
        """`consume` a read at a time: each list is what one read from the broker handed over (1 to
        `batch_size` deliveries, in order), so that a consumer can work on them together (one dedup
        round trip for the lot) without a hand-off per delivery. The next read is made when the
        consumer asks for the next list."""

    @abc.abstractmethod
    def read(self, topic: str, *, since: datetime | None = None, until: datetime | None = None,
             start_id: str | None = None, end_id: str | None = None,
             limit: int | None = None) -> AsyncIterator[Record]:
        """Records in a time or id range (inclusive), oldest first, outside any group."""

    @abc.abstractmethod
    async def group_lag(self, topic: str, group: str) -> GroupLag:
        """How far `group` is behind on `topic`, read from the broker (no member needed). A group that
        never read the topic has position None everywhere and no members. Raises TopicNotFound."""

    @abc.abstractmethod
    async def rewind_group(self, topic: str, group: str, *, since: datetime, until: datetime | None = None,
                           dry_run: bool = False, force: bool = False) -> dict[int | None, int]:
        """Move `group`'s position on `topic` back to the first record at or after `since`, so that the
        records of [since, until] are delivered to it again; returns, per partition (None: the stream),
        how many records of that range it will be handed. `dry_run`: count only, change nothing, refuse
        nothing for members.

        A position already before `since` stays (nothing unread is skipped). The broker delivers from
        the new position onward, so records after `until` come again too: the consumer's dedup drops
        them (brokers.dedup). Records of the range delivered and not yet acknowledged are handed over
        afresh (attempt 1). Raises GroupNotFound when the group never read the topic and GroupActive
        while it has members: Redis moves anyway with `force`; Kafka moves the offsets of an empty
        group only, `force` or not."""

    @property
    @abc.abstractmethod
    def max_record_bytes(self) -> int:
        """The size limit of one encoded record."""
