"""Reading a Kafka topic range outside any group, for `KafkaBroker.read` (brokers/kafka.py).

`position_reader` assigns and seeks a group-less consumer to the first record in range of each
partition and says where each partition stops; `MergedRange` then yields the records of all
partitions merged by timestamp.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from brokers.errors import ConfigurationError

__all__ = ["MergedRange", "parse_id", "position_reader"]


def parse_id(record_id: str | None) -> tuple[int, int] | None:
    """'<partition>:<offset>' (or a bare offset, meaning partition 0)."""
    if record_id is None:
        return None
    partition, _, offset = record_id.rpartition(":")
    try:
        return int(partition or 0), int(offset)
    except ValueError:
        raise ConfigurationError(f"not a Kafka record id: {record_id!r} (want '<partition>:<offset>')") \
            from None


async def position_reader(reader: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None,
                           first: tuple[int, int] | None,
                           last: tuple[int, int] | None) -> dict[TopicPartition, int]:
    """Assign and seek the partitions with records in range; returns where each one stops."""
    # Paused until positioned: a fetch from the default position would make the first
    # getmany() wait out fetch_max_wait_ms for nothing.
    reader.assign(tps)
    reader.pause(*tps)
    ends = await reader.end_offsets(tps)
    starts = await reader.beginning_offsets(tps)
    found = await reader.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps}) \
        if since is not None else {}
    begins, stops = {}, {}
    for tp in tps:
        begin, stop = starts[tp], ends[tp]
        if first is not None:
            begin = max(begin, first[1])
        if since is not None:
            at = found.get(tp)
            begin = max(begin, at.offset if at is not None else stop)
        if last is not None:
            stop = min(stop, last[1] + 1)
        if begin < stop:
            begins[tp], stops[tp] = begin, stop
    for tp, begin in begins.items():
        reader.seek(tp, begin)
    reader.resume(*begins)
    return stops


class MergedRange:
    """Records of several partitions up to their stops, merged by timestamp (then partition)."""

    def __init__(self, reader: AIOKafkaConsumer, stops: dict[TopicPartition, int], until_ms: int | None):
        self._reader = reader
        self._stops = stops
        self._until_ms = until_ms
        self._buffers = {tp: deque[ConsumerRecord]() for tp in stops}
        self._open = set(stops)  # partitions that may have more records in range

    async def next(self) -> ConsumerRecord | None:
        # Every open partition needs a buffered head before the oldest head can be picked.
        while waiting := [tp for tp in self._open if not self._buffers[tp]]:
            await self._fetch(waiting)
        ready = [tp for tp, buffer in self._buffers.items() if buffer]
        if not ready:
            return None
        tp = min(ready, key=lambda t: (self._buffers[t][0].timestamp, t.partition))
        return self._buffers[tp].popleft()

    async def _fetch(self, waiting: list[TopicPartition]) -> None:
        for tp in waiting:
            if await self._reader.position(tp) >= self._stops[tp]:
                self._open.discard(tp)
        wanted = [tp for tp in waiting if tp in self._open]
        if not wanted:
            return
        batch = await self._reader.getmany(*wanted, timeout_ms=500, max_records=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= self._stops[tp] or \
                        (self._until_ms is not None and record.timestamp > self._until_ms):
                    self._open.discard(tp)
                    break
                self._buffers[tp].append(record)
