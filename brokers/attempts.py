"""Delivery attempt counters for brokers that keep none themselves (Kafka).

A Kafka consumer group knows where it is, not how often a record was handed out. To dead-letter a
record that kills its consumer every time, the members of a group share an `AttemptStore`, which
says for each fetched record which attempt this is (`Delivery.attempt`), in one round trip per
fetched batch.

Most records are delivered once, so the store does not keep a counter per record: per group and
partition ("<topic>:<partition>") it keeps the highest offset ever handed out (the *mark*). A record
past the mark is a first delivery (attempt 1) and moves the mark; only a record at or below it (handed
out before: a nack, a crash, a rebalance) gets a counter of its own, and an ack clears that counter.
Marks and counters expire (`ttl_s`), so a missed clear costs a little memory for a while.

    store = RedisAttemptStore("redis://127.0.0.1:6379/0")
    broker = KafkaBroker("kafka://127.0.0.1:9092", attempt_store=store)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from brokers._redis_errors import translate_redis_error

__all__ = ["AttemptStore", "MemoryAttemptStore", "Position", "RedisAttemptStore", "partition_name"]

_json = msgspec.json.encode

Position = tuple[str, int]  # ("<topic>:<partition>", offset)


def partition_name(topic: str, partition: int) -> str:
    """How a partition is named in positions and counters."""
    return f"{topic}:{partition}"


@runtime_checkable
class AttemptStore(Protocol):
    """Per-group delivery attempts of records named by their partition and offset."""

    async def count(self, group: str, positions: Sequence[Position]) -> list[int]:
        """This delivery's attempt number of each record, in order (each partition's offsets ascending)."""
        ...

    async def clear_many(self, group: str, positions: Sequence[Position]) -> None:
        """Forget the records' counters (they were acknowledged after more than one attempt)."""
        ...

    async def forget(self, group: str, partitions: Sequence[str]) -> None:
        """Forget everything about these partitions: their records count from attempt 1 again (a
        group moved back to replay them)."""
        ...


def _by_partition(positions: Sequence[Position]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for partition, offset in positions:
        grouped[partition].append(offset)
    return grouped


class MemoryAttemptStore:
    """In-process marks and counters, for unit tests and single-process use."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], int] = {}
        self.counts: dict[tuple[str, str, int], int] = {}

    async def count(self, group: str, positions: Sequence[Position]) -> list[int]:
        out = []
        for partition, offset in positions:
            mark = self.marks.get((group, partition), -1)
            if offset > mark:
                self.marks[(group, partition)] = offset
                out.append(1)
            else:
                key = (group, partition, offset)
                self.counts[key] = self.counts.get(key, 1) + 1
                out.append(self.counts[key])
        return out

    async def clear_many(self, group: str, positions: Sequence[Position]) -> None:
        for partition, offset in positions:
            self.counts.pop((group, partition, offset), None)

    async def forget(self, group: str, partitions: Sequence[str]) -> None:
        for partition in partitions:
            self.marks.pop((group, partition), None)
        self.counts = {key: n for key, n in self.counts.items() if (key[0], key[1]) not in
                       {(group, partition) for partition in partitions}}


# KEYS: per partition its mark, then its counters (a hash: offset -> deliveries after the first).
# ARGV: the TTL in seconds, then ONE JSON array holding per partition the array of its offsets,
# ascending (one argument: redis-py packs every argument in Python, which cost more than the script).
# Returns only what is not a first delivery, flat: {index in the batch (0-based), attempt, ...}.
_COUNT = """
local ttl = ARGV[1]
local batch = cjson.decode(ARGV[2])
local out = {}
local k = 0
for p = 1, #KEYS, 2 do
  local mark = tonumber(redis.call('GET', KEYS[p]) or '-1')
  local top = mark
  local again = false
  for _, offset in ipairs(batch[(p + 1) / 2]) do
    if offset > mark then
      if offset > top then top = offset end
    else
      out[#out + 1] = k
      out[#out + 1] = redis.call('HINCRBY', KEYS[p + 1], string.format('%d', offset), 1) + 1
      again = true
    end
    k = k + 1
  end
  redis.call('SET', KEYS[p], string.format('%d', top), 'EX', ttl)
  if again then redis.call('EXPIRE', KEYS[p + 1], ttl) end
end
return out
"""


class RedisAttemptStore:
    """Marks and counters in Redis (`<namespace>:delivered:<group>:<partition>` and
    `<namespace>:attempts:<group>:<partition>`), one script call per fetched batch."""

    def __init__(self, url_or_client: str | aioredis.Redis, namespace: str = "ringrift",
                 ttl_s: int = 7 * 24 * 3600) -> None:
        self._owned = isinstance(url_or_client, str)
        self._redis = aioredis.from_url(url_or_client) if isinstance(url_or_client, str) else url_or_client
        self._prefix = f"{namespace}:attempts:"
        self._mark_prefix = f"{namespace}:delivered:"
        self._ttl_s = ttl_s
        self._count = self._redis.register_script(_COUNT)

    def _keys(self, group: str, partition: str) -> tuple[str, str]:
        return f"{self._mark_prefix}{group}:{partition}", f"{self._prefix}{group}:{partition}"

    async def count(self, group: str, positions: Sequence[Position]) -> list[int]:
        if not positions:
            return []
        keys: list[str] = []
        grouped = _by_partition(positions)
        for partition in grouped:
            keys.extend(self._keys(group, partition))
        try:
            again = await self._count(keys=keys, args=[self._ttl_s, _json(list(grouped.values()))])
        except (redis_errors.RedisError, OSError) as exc:
            raise translate_redis_error(exc, "attempt store: count delivery attempts") from exc
        # The script numbered the offsets partition by partition: map them back to the callers' order.
        counts = [1] * len(positions)
        if again:
            order = [(partition, offset) for partition, offsets in grouped.items() for offset in offsets]
            index = {position: i for i, position in enumerate(positions)}
            for k in range(0, len(again), 2):
                counts[index[order[int(again[k])]]] = int(again[k + 1])
        return counts

    async def clear_many(self, group: str, positions: Sequence[Position]) -> None:
        if not positions:
            return
        pipe = self._redis.pipeline(transaction=False)
        for partition, offsets in _by_partition(positions).items():
            pipe.hdel(self._keys(group, partition)[1], *offsets)
        await self._execute(pipe, "clear attempt counters")

    async def forget(self, group: str, partitions: Sequence[str]) -> None:
        if not partitions:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(*(key for partition in partitions for key in self._keys(group, partition)))
        await self._execute(pipe, "forget attempt counters")

    async def close(self) -> None:
        """Close the connection pool if this store created it from a URL."""
        if self._owned:
            await self._redis.aclose()

    @staticmethod
    async def _execute(pipe: aioredis.client.Pipeline, what: str) -> None:
        try:
            await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate_redis_error(exc, f"attempt store: {what}") from exc
