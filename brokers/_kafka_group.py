"""One member of a Kafka consumer group, for brokers/kafka.py: what `KafkaBroker.consume` iterates.

Each assigned partition keeps its delivered-but-unacked records in offset order; the group's offset is
committed only up to the first of them, so a record is never skipped by a crash or rebalance. One
committer task per member commits whatever moved; acks arriving while a commit is in flight ride on
the next one, so many acks cost one request. Kafka keeps no delivery count: with an `AttemptStore`
(brokers/attempts.py) `Delivery.attempt` is shared by the group, otherwise it counts local nacks only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener

from brokers._kafka_errors import CLIENT_ERRORS, REBALANCED_ERRORS, stop_client, translate
from brokers.base import Delivery, decode_record
from brokers.errors import BrokerError
from brokers.settings import KafkaSettings

if TYPE_CHECKING:
    from brokers.attempts import AttemptStore

__all__ = ["GroupMember", "key_str"]

log = logging.getLogger("brokers.kafka")  # the backend's logger: operators configure one name
_FETCH_WAIT_MS = 200  # one getmany() waits this long, so a nack from another task is seen soon


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
    pending: dict[int, _InFlight] = field(default_factory=dict)
    next_offset: int = -1
    committed: int = -1
    revoked: bool = False

    def commit_point(self) -> int:
        return next(iter(self.pending), self.next_offset)

    def ack(self, offset: int) -> bool:
        """Mark `offset` acked; True when the commit point moved beyond what is committed."""
        flight = self.pending.get(offset)
        if flight is None:
            return False
        flight.acked = True
        while self.pending:
            first = next(iter(self.pending))
            if not self.pending[first].acked:
                break
            del self.pending[first]
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
        self._redeliver: deque[tuple[_Partition, int]] = deque()
        self._acked_keys: list[str] = []
        self._round: asyncio.Future[None] | None = None  # resolved by the next commit
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    # -- delivering ---------------------------------------------------------------------------

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Nacked records first, then the fetched batch, then the next fetch."""
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        while not self._closed:
            if self._redeliver:
                state, offset = self._redeliver.popleft()
                flight = state.pending.get(offset)
                if state.revoked or flight is None or flight.acked:
                    continue
                flight.attempt = (await self._count([flight.record]))[0] if self._store else \
                    flight.attempt + 1
                yield self._delivery(state, flight)
            elif self._buffer:
                state, flight = self._buffer.popleft()
                if not state.revoked:
                    yield self._delivery(state, flight)
            elif not await self._fetch():
                return

    async def _fetch(self) -> bool:
        """One getmany() into the buffer; False once the consumer was stopped."""
        assert self.consumer is not None
        try:
            batch = await self.consumer.getmany(timeout_ms=_FETCH_WAIT_MS, max_records=self._batch_size)
        except kafka_errors.ConsumerStoppedError:
            return False
        except CLIENT_ERRORS as exc:
            raise translate(exc, f"consume {self.topic!r} in group {self.group!r}") from exc
        fetched: list[tuple[_Partition, _InFlight]] = []
        for tp, records in batch.items():
            state = self._states.get(tp)
            if state is None:  # normally made by on_partitions_assigned already
                state = self._states[tp] = _Partition(tp)
            for record in records:
                flight = _InFlight(record)
                state.pending[record.offset] = flight
                state.next_offset = record.offset + 1
                fetched.append((state, flight))
        if fetched and self._store is not None:
            attempts = await self._count([flight.record for _, flight in fetched])
            for (_, flight), attempt in zip(fetched, attempts, strict=True):
                flight.attempt = attempt
        self._buffer.extend(fetched)
        if any(state.committed < 0 for state, _ in fetched):
            # This member has not committed on these partitions yet: commit where it stands (the first
            # fetched offset, which is where the group resumes anyway), so that the broker knows the
            # group's position (group_lag, replay) before its first ack.
            self._wake.set()
        return True

    def _delivery(self, state: _Partition, flight: _InFlight) -> Delivery:
        record = flight.record
        value = record.value or b""
        timestamp = record.timestamp / 1000
        event, error = decode_record(value, topic=record.topic, partition=record.partition,
                                     offset=record.offset, timestamp=timestamp, headers=record.headers)
        return Delivery(event=event, record_id=f"{record.partition}:{record.offset}", topic=record.topic,
                        settle=partial(self._settle, state), key=key_str(record.key),
                        attempt=flight.attempt, error=error, raw=value if event is None else None,
                        partition=record.partition, timestamp=timestamp, headers=record.headers)

    async def _count(self, records: Sequence[ConsumerRecord]) -> list[int]:
        """Shared attempt counters, one round trip; local counts if the store cannot be reached."""
        assert self._store is not None
        try:
            return await self._store.incr_many(self.group, [self._attempt_key(r) for r in records])
        except BrokerError as exc:
            log.warning("attempt store unavailable, counting attempts locally: %s", exc)
            return [1] * len(records)

    @staticmethod
    def _attempt_key(record: ConsumerRecord) -> str:
        return f"{record.topic}:{record.partition}:{record.offset}"

    # -- acknowledging and committing ---------------------------------------------------------

    async def _settle(self, state: _Partition, delivery: Delivery, ok: bool) -> None:
        if state.revoked:  # the partition went to another member, which delivers the record again
            return
        offset = int(delivery.record_id.rpartition(":")[2])
        if not ok:
            self._redeliver.append((state, offset))
            return
        if self._store is not None and offset in state.pending:
            self._acked_keys.append(self._attempt_key(state.pending[offset].record))
        # An ack behind an unacked record cannot be committed yet: it returns at once and is
        # covered by the commit that follows the earlier record's ack.
        if state.ack(offset):
            await asyncio.shield(self._next_round())

    def _next_round(self) -> asyncio.Future[None]:
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
            # Retrieve the outcome even when every waiter was cancelled (no "never retrieved").
            self._round.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._wake.set()
        return self._round

    async def _commit_loop(self) -> None:
        """Commit whenever acks arrived; acks made during one commit all ride on the next one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Commit every partition's commit point that moved, in one request."""
        async with self._commit_lock:
            waiters, self._round = self._round, None
            keys, self._acked_keys = self._acked_keys, []
            moved = [(state, state.commit_point()) for state in self._states.values()]
            moved = [(state, point) for state, point in moved if point > state.committed]
            error: BrokerError | None = None
            if moved and self.consumer is not None:
                try:
                    await asyncio.wait_for(self.consumer.commit({s.tp: point for s, point in moved}),
                                           self._commit_timeout_s)
                    for state, point in moved:
                        state.committed = max(state.committed, point)
                except REBALANCED_ERRORS as exc:
                    log.info("group %r rebalanced before a commit (%s); unacked records of the moved "
                             "partitions will be delivered again", self.group, exc)
                except Exception as exc:  # whatever it was, the ackers waiting must hear of it
                    error = translate(exc, f"commit offsets of group {self.group!r}")
            if waiters is not None and not waiters.done():
                if error is None:
                    waiters.set_result(None)
                else:
                    waiters.set_exception(error)
        if keys and error is None and self._store is not None:
            try:
                await self._store.clear_many(self.group, keys)
            except BrokerError as exc:  # best effort: the counters expire anyway
                log.warning("could not clear attempt counters: %s", exc)

    # -- rebalancing (called by aiokafka's coordinator task) ----------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.commit()
        for tp in revoked:
            state = self._states.pop(tp, None)
            if state is not None:
                state.revoked = True

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:  # positions restart from the committed offsets: start afresh
            self._states[tp] = _Partition(tp)

    async def close(self) -> None:
        """Commit what is acked, then leave the group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.commit()
        finally:
            for state in self._states.values():
                state.revoked = True
            if self._committer is not None:
                self._committer.cancel()
            if self.consumer is not None:
                await stop_client(self.consumer)
