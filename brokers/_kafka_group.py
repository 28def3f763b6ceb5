"""One member of a Kafka consumer group, for brokers/kafka.py: what `KafkaBroker.consume` iterates.

Each assigned partition keeps its delivered-but-unacked records in offset order; the group's offset is
committed only up to the first of them, so a record is never skipped by a crash or rebalance. One
committer task per member commits whatever moved: an ack only marks its record and returns, and acks
arriving while a commit is in flight ride on the next one, so many acks cost one request and no
delivery waits for a commit. Kafka keeps no delivery count: with an `AttemptStore`
(brokers/attempts.py) `Delivery.attempt` is shared by the group, otherwise it counts local nacks only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener

from brokers._kafka_errors import CLIENT_ERRORS, REBALANCED_ERRORS, stop_client, translate
from brokers.attempts import partition_name
from brokers.base import Delivery, decode_record
from brokers.errors import BrokerError
from brokers.settings import KafkaSettings

if TYPE_CHECKING:
    from brokers.attempts import AttemptStore, Position

__all__ = ["GroupMember", "key_str"]

log = logging.getLogger("brokers.kafka")  # the backend's logger: operators configure one name
_FETCH_WAIT_MS = 200  # one getmany() waits this long, so a nack from another task is seen soon
_COMMIT_RETRY_S = 1.0  # a failed commit is retried after this long


def _take(queue: deque[tuple[_Partition, _InFlight]], limit: int,
          wanted: Callable[[_Partition, _InFlight], bool]) -> list[tuple[_Partition, _InFlight]]:
    """Up to `limit` items off the front of `queue`, keeping those `wanted` says still count."""
    taken = [queue.popleft() for _ in range(min(limit, len(queue)))]
    return [(state, flight) for state, flight in taken if wanted(state, flight)]


def key_str(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


@dataclass(slots=True, eq=False)
class _InFlight:
    record: ConsumerRecord
    attempt: int = 1
    acked: bool = False


@dataclass(eq=False)
class _Partition:
    """One assigned partition of a member: what was delivered, what was acked, what is committed.

    `pending` holds fetched records in offset order until every earlier one is acked, so the commit
    point (the offset the group resumes from) is the first pending offset, or the next one to fetch.
    A new object is made on each assignment; `revoked` marks the old one so late acks do nothing.
    """

    tp: TopicPartition
    name: str = ""  # "<topic>:<partition>", as the attempt store names it
    pending: deque[_InFlight] = field(default_factory=deque)
    next_offset: int = -1
    committed: int = -1
    revoked: bool = False

    def commit_point(self) -> int:
        return self.pending[0].record.offset if self.pending else self.next_offset

    def ack(self, flight: _InFlight) -> bool:
        """Mark `flight` acked; True when the commit point moved beyond what is committed."""
        flight.acked = True
        pending = self.pending
        if not pending or pending[0] is not flight:  # behind an unacked record: the point stays
            return False
        while pending and pending[0].acked:
            pending.popleft()
        return self.commit_point() > self.committed


class GroupMember(ConsumerRebalanceListener):
    """One member of a consumer group: fetches, tracks offsets, commits, follows rebalances."""

    def __init__(self, topic: str, group: str, batch_size: int, settings: KafkaSettings) -> None:
        self.topic = topic
        self.group = group
        self.consumer: AIOKafkaConsumer | None = None
        self._batch_size = batch_size
        self._store: AttemptStore | None = settings.attempt_store
        self._commit_timeout_s = max(settings.retry_budget_s, settings.request_timeout_ms / 1000)
        self._states: dict[TopicPartition, _Partition] = {}
        self._buffer: deque[tuple[_Partition, _InFlight]] = deque()
        self._redeliver: deque[tuple[_Partition, _InFlight]] = deque()
        self._next_batch: asyncio.Task[list[tuple[_Partition, _InFlight]] | None] | None = None
        self._acked_again: list[Position] = []  # acked after more than one attempt: counters to clear
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    # -- delivering ---------------------------------------------------------------------------

    async def batches(self, limit: int) -> AsyncIterator[list[Delivery]]:
        """Up to `limit` deliveries at a time: nacked records first (counted in one round trip), then
        the fetched ones, then the next fetch. A record nacked while its batch is handled comes again
        after that batch (with `limit` 1: before the records fetched after it)."""
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        while not self._closed:
            if self._redeliver:
                again = _take(self._redeliver, limit, lambda state, flight: not (state.revoked or flight.acked))
                local = [flight.attempt + 1 for _, flight in again]
                attempts = await self._count(again, local) if self._store and again else local
                for (_, flight), attempt in zip(again, attempts, strict=True):
                    flight.attempt = attempt
            elif self._buffer:
                again = _take(self._buffer, limit, lambda state, flight: not state.revoked)
            elif not await self._fetch():
                return
            else:
                continue
            if again:
                yield [self._delivery(state, flight) for state, flight in again]

    async def _fetch(self) -> bool:
        """The next batch into the buffer; False once the consumer was stopped. With an attempt store
        the batch after it is fetched and counted meanwhile, so that its round trip to the store
        overlaps the handling of this one instead of stalling the deliveries."""
        task, self._next_batch = self._next_batch, None
        fetched = await (task if task is not None else self._fetch_batch())
        if fetched is None:
            return False
        self._buffer.extend(fetched)
        if self._store is not None:
            self._next_batch = asyncio.get_running_loop().create_task(self._fetch_batch())
        return True

    async def _fetch_batch(self) -> list[tuple[_Partition, _InFlight]] | None:
        """One getmany(), tracked and counted; None once the consumer was stopped."""
        assert self.consumer is not None
        try:
            batch = await self.consumer.getmany(timeout_ms=_FETCH_WAIT_MS, max_records=self._batch_size)
        except kafka_errors.ConsumerStoppedError:
            return None
        except CLIENT_ERRORS as exc:
            raise translate(exc, f"consume {self.topic!r} in group {self.group!r}") from exc
        fetched: list[tuple[_Partition, _InFlight]] = []
        first_fetch = False
        for tp, records in batch.items():
            if not records:
                continue
            state = self._states.get(tp)
            if state is None:  # normally made by on_partitions_assigned already
                state = self._states[tp] = _Partition(tp, partition_name(tp.topic, tp.partition))
            first_fetch = first_fetch or state.committed < 0
            flights = [_InFlight(record) for record in records]
            state.pending.extend(flights)
            state.next_offset = records[-1].offset + 1
            fetched.extend((state, flight) for flight in flights)
        if fetched and self._store is not None:
            attempts = await self._count(fetched, [1] * len(fetched))
            for (_, flight), attempt in zip(fetched, attempts, strict=True):
                flight.attempt = attempt
        if first_fetch:
            # This member has not committed on these partitions yet: commit where it stands (the first
            # fetched offset, which is where the group resumes anyway), so that the broker knows the
            # group's position (group_lag, replay) before its first ack.
            self._wake.set()
        return fetched

    def _delivery(self, state: _Partition, flight: _InFlight) -> Delivery:
        record = flight.record
        value = record.value or b""
        timestamp = record.timestamp / 1000
        event, error = decode_record(value, topic=record.topic, partition=record.partition,
                                     offset=record.offset, timestamp=timestamp, headers=record.headers)
        return Delivery(event=event, record_id=f"{record.partition}:{record.offset}", topic=record.topic,
                        settle=partial(self._settle, state, flight), key=key_str(record.key),
                        attempt=flight.attempt, error=error, raw=value if event is None else None,
                        partition=record.partition, timestamp=timestamp, headers=record.headers)

    async def _count(self, flights: Sequence[tuple[_Partition, _InFlight]], local: list[int]) -> list[int]:
        """Shared attempt numbers, one round trip; the `local` ones if the store cannot be reached."""
        assert self._store is not None
        try:
            return await self._store.count(self.group, [(state.name, flight.record.offset)
                                                        for state, flight in flights])
        except BrokerError as exc:
            log.warning("attempt store unavailable, counting attempts locally: %s", exc)
            return local

    # -- acknowledging and committing ---------------------------------------------------------

    async def _settle(self, state: _Partition, flight: _InFlight, delivery: Delivery, ok: bool) -> None:
        """An ack returns at once: the committer commits it with whatever else was acked meanwhile.
        At least once still holds: an offset is committed only when every record before it in its
        partition is acked, and a record acked but not yet committed is delivered again after a crash."""
        if state.revoked:  # the partition went to another member, which delivers the record again
            return
        if not ok:
            self._redeliver.append((state, flight))
            return
        if flight.attempt > 1 and self._store is not None:
            self._acked_again.append((state.name, flight.record.offset))
        if state.ack(flight):
            self._wake.set()

    async def _commit_loop(self) -> None:
        """Commit whenever acks arrived, one commit in flight: acks made during it ride on the next one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not await self.commit():
                await asyncio.sleep(_COMMIT_RETRY_S)
                self._wake.set()

    async def commit(self) -> bool:
        """Commit every partition's commit point that moved, in one request; False when it failed
        (the offsets stay uncommitted and the next commit carries them)."""
        async with self._commit_lock:
            cleared, self._acked_again = self._acked_again, []
            moved = [(state, state.commit_point()) for state in self._states.values()]
            moved = [(state, point) for state, point in moved if point > state.committed]
            if moved and self.consumer is not None:
                try:
                    await asyncio.wait_for(self.consumer.commit({s.tp: point for s, point in moved}),
                                           self._commit_timeout_s)
                    for state, point in moved:
                        state.committed = max(state.committed, point)
                except REBALANCED_ERRORS as exc:
                    log.info("group %r rebalanced before a commit (%s); unacked records of the moved "
                             "partitions will be delivered again", self.group, exc)
                except Exception as exc:  # whatever it was: retried, the records are not lost
                    what = translate(exc, f"commit offsets of group {self.group!r}")
                    if self._closed:  # no next commit: the group resumes from the last one
                        log.warning("%s; the records acked since the last commit will be delivered again", what)
                    else:
                        log.warning("%s; retrying", what)
                    self._acked_again[:0] = cleared
                    return False
        if cleared and self._store is not None:
            try:
                await self._store.clear_many(self.group, cleared)
            except BrokerError as exc:  # best effort: the counters expire anyway
                log.warning("could not clear attempt counters: %s", exc)
        return True

    # -- rebalancing (called by aiokafka's coordinator task) ----------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.commit()
        for tp in revoked:
            state = self._states.pop(tp, None)
            if state is not None:
                state.revoked = True

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:  # positions restart from the committed offsets: start afresh
            self._states[tp] = _Partition(tp, partition_name(tp.topic, tp.partition))

    async def close(self) -> None:
        """Commit what is acked, then leave the group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        prefetch, self._next_batch = self._next_batch, None
        if prefetch is not None:  # its records were never delivered: they are not committed
            prefetch.cancel()
            await asyncio.wait([prefetch])
            if not prefetch.cancelled():
                prefetch.exception()  # retrieved: the consumer is closing, its failure does not matter
        try:
            await self.commit()
        finally:
            for state in self._states.values():
                state.revoked = True
            if self._committer is not None:
                self._committer.cancel()
            if self.consumer is not None:
                await stop_client(self.consumer)
