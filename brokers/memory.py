"""The in-process broker: the reference implementation of the contract, short and obviously right.

For unit tests and single-process use, never as a stand-in for an integration test of Redis or Kafka.
Brokers connected to the same `memory://name` in one process share their topics. Semantics follow
Redis Streams: one ordered log per topic; a group has a cursor and a pending list; a delivery stays
pending until acked; a nacked one is delivered again; one left pending longer than `claim_idle_ms`
(its member died or walked away) is handed to whichever member asks next, with attempt + 1.
A group's members are its running `consume` iterators; its position (`group_lag`) is the sequence
number of the next record it will be handed, like a Kafka offset.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

from brokers.base import (
    Broker,
    Capabilities,
    Delivery,
    GroupLag,
    PartitionLag,
    Record,
    Settle,
    StartPosition,
    check_size,
    decode_record,
)
from brokers.errors import BrokerClosed, GroupActive, GroupNotFound
from brokers.settings import MemorySettings

__all__ = ["MemoryBroker"]


@dataclass(slots=True)
class _Entry:
    seq: int
    value: bytes
    key: str | None
    timestamp: float
    headers: Sequence[tuple[str, bytes]] | None


@dataclass(slots=True)
class _Pending:
    consumer: str
    since: float
    count: int


@dataclass
class _Group:
    cursor: int
    pending: dict[int, _Pending] = field(default_factory=dict)
    redeliver: deque[int] = field(default_factory=deque)
    members: Counter[str] = field(default_factory=Counter)  # consumer name -> running iterators
    next_claim_scan: float = 0.0  # monotonic time of the next look for abandoned deliveries


@dataclass
class _Topic:
    entries: list[_Entry] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


_stores: dict[str, dict[str, _Topic]] = {}


class MemoryBroker(Broker):
    capabilities = Capabilities(persistent=False, partitions=False, attempt_counts=True)

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        self.url = url
        self.settings = MemorySettings.from_url(url, **options)
        self._topics = _stores.setdefault(self.settings.name, {})
        self._closed = False

    @property
    def max_record_bytes(self) -> int:
        return self.settings.max_record_bytes

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _topic(self, name: str) -> _Topic:
        if self._closed:
            raise BrokerClosed("memory broker is closed")
        return self._topics.setdefault(name, _Topic())

    async def ensure_topic(self, name: str, partitions: int = 1, *, compacted: bool = False) -> None:
        self._topic(name)

    async def publish_raw(self, topic: str, value: bytes, key: str | None = None,
                          headers: Sequence[tuple[str, bytes]] | None = None) -> str:
        check_size(value, self.max_record_bytes, topic)
        log = self._topic(topic)
        entry = _Entry(len(log.entries), value, key, time.time(), headers)
        log.entries.append(entry)
        log.wake()
        return str(entry.seq)

    async def publish_raw_batch(self, topic: str, values: Sequence[bytes],
                                key: str | None = None) -> list[str]:
        for value in values:
            check_size(value, self.max_record_bytes, topic)
        return [await self.publish_raw(topic, value, key) for value in values]

    async def consume_batches(self, topic: str, group: str, consumer: str | None = None, *,
                              start: StartPosition = "earliest", batch_size: int = 100,
                              claim_idle_ms: int = 30_000) -> AsyncIterator[list[Delivery]]:
        log = self._topic(topic)
        me = consumer or uuid4().hex
        state = log.groups.setdefault(group, _Group(cursor=0 if start == "earliest" else len(log.entries)))

        async def settle(delivery: Delivery, ok: bool) -> None:
            seq = int(delivery.record_id)
            if ok:
                state.pending.pop(seq, None)
            elif seq in state.pending:
                state.redeliver.append(seq)
                log.wake()

        state.members[me] += 1
        # like a Redis consumer restarted with its name: what it left pending comes first
        state.redeliver.extend(seq for seq, pending in state.pending.items()
                               if pending.consumer == me and seq not in state.redeliver)
        try:
            while True:
                batch: list[Delivery] = []
                while len(batch) < batch_size and (seq := self._next(log, state, me, claim_idle_ms / 1000)) is not None:
                    batch.append(self._delivery(topic, log.entries[seq], state.pending[seq].count, settle))
                if batch:
                    yield batch
                    continue
                waiter = asyncio.get_running_loop().create_future()
                log.waiters.add(waiter)
                try:
                    await asyncio.wait_for(waiter, timeout=max(0.01, min(claim_idle_ms / 2000, 0.2)))
                except TimeoutError:
                    pass
                if self._closed:
                    return
        finally:
            state.members[me] -= 1
            if state.members[me] <= 0:
                del state.members[me]

    @staticmethod
    def _delivery(topic: str, entry: _Entry, attempt: int, settle: Settle) -> Delivery:
        event, error = decode_record(entry.value, topic=topic, partition=None, offset=entry.seq,
                                     timestamp=entry.timestamp, headers=entry.headers)
        return Delivery(event=event, record_id=str(entry.seq), topic=topic, key=entry.key, attempt=attempt,
                        error=error, raw=entry.value if event is None else None, timestamp=entry.timestamp,
                        headers=entry.headers, settle=settle)

    @staticmethod
    def _next(log: _Topic, state: _Group, me: str, claim_idle_s: float) -> int | None:
        """The next record for `me`: a nacked one, then a claimable one, then a new one."""
        now = time.monotonic()
        while state.redeliver:
            seq = state.redeliver.popleft()
            if seq in state.pending:
                pending = state.pending[seq]
                pending.consumer, pending.since, pending.count = me, now, pending.count + 1
                return seq
        if now >= state.next_claim_scan:  # not on every read: the scan is linear in the pending list
            for seq, pending in state.pending.items():  # only a member that is gone leaves its records
                if pending.consumer != me and pending.consumer not in state.members and \
                        now - pending.since >= claim_idle_s:
                    pending.consumer, pending.since, pending.count = me, now, pending.count + 1
                    return seq
            state.next_claim_scan = now + min(claim_idle_s / 4, 0.25)
        if state.cursor < len(log.entries):
            seq = state.cursor
            state.cursor += 1
            state.pending[seq] = _Pending(me, now, 1)
            return seq
        return None

    async def read(self, topic: str, *, since: datetime | None = None, until: datetime | None = None,
                   start_id: str | None = None, end_id: str | None = None,
                   limit: int | None = None) -> AsyncIterator[Record]:
        lo = since.timestamp() if since else float("-inf")
        hi = until.timestamp() if until else float("inf")
        first = int(start_id) if start_id is not None else 0
        last = int(end_id) if end_id is not None else None
        count = 0
        for entry in list(self._topic(topic).entries[first:]):
            if last is not None and entry.seq > last:
                return
            if not lo <= entry.timestamp <= hi:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            event, error = decode_record(entry.value, topic=topic, partition=None, offset=entry.seq,
                                         timestamp=entry.timestamp, headers=entry.headers)
            yield Record(event=event, record_id=str(entry.seq), timestamp=entry.timestamp, key=entry.key,
                         error=error, raw=entry.value if event is None else None)

    # -- operating on groups -------------------------------------------------------------------------

    async def group_lag(self, topic: str, group: str) -> GroupLag:
        log = self._topic(topic)
        end = len(log.entries)
        state = log.groups.get(group)
        if state is None:
            return GroupLag(topic, group, (PartitionLag(None, None, str(end), None),), members=0)
        where = PartitionLag(None, str(state.cursor), str(end), end - state.cursor, len(state.pending))
        return GroupLag(topic, group, (where,), members=len(state.members))

    async def rewind_group(self, topic: str, group: str, *, since: datetime, until: datetime | None = None,
                           dry_run: bool = False, force: bool = False) -> dict[int | None, int]:
        log = self._topic(topic)
        state = log.groups.get(group)
        if state is None:
            raise GroupNotFound(f"consumer group {group!r} has never read {topic!r}")
        if state.members and not (force or dry_run):
            raise GroupActive(f"consumer group {group!r} has {len(state.members)} running member(s) on "
                              f"{topic!r}: stop them first", len(state.members))
        lo, hi = since.timestamp(), until.timestamp() if until is not None else float("inf")
        in_range = sum(1 for entry in log.entries if lo <= entry.timestamp <= hi)
        first = next((entry.seq for entry in log.entries if entry.timestamp >= lo), len(log.entries))
        if not dry_run:
            state.cursor = min(state.cursor, first)
            for seq in [seq for seq in state.pending if seq >= first]:  # they come again, afresh
                del state.pending[seq]
            state.redeliver = deque(seq for seq in state.redeliver if seq in state.pending)
            log.wake()
        return {None: in_range}
