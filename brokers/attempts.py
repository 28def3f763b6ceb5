"""Delivery attempt counters for brokers that keep none themselves (Kafka).

A Kafka consumer group knows where it is, not how often a record was handed out. To dead-letter a
record that kills its consumer every time, the members of a group share an `AttemptStore`: each
delivery increments the record's counter (one round trip per fetched batch) and the returned value
is `Delivery.attempt`; an ack clears it. Counters also expire (`ttl_s`), so a missed clear costs
nothing but a little memory for a while.

    store = RedisAttemptStore("redis://127.0.0.1:6379/0")
    broker = KafkaBroker("kafka://127.0.0.1:9092", attempt_store=store)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from brokers._redis_errors import translate_redis_error

__all__ = ["AttemptStore", "MemoryAttemptStore", "RedisAttemptStore"]


@runtime_checkable
class AttemptStore(Protocol):
    """Per-group delivery counters keyed by record position (e.g. "topic:partition:offset")."""

    async def incr_many(self, group: str, keys: Sequence[str]) -> list[int]:
        """Add one to each key's counter and return the new values, in order."""
        ...

    async def clear_many(self, group: str, keys: Sequence[str]) -> None:
        """Forget the keys' counters (their records were acknowledged)."""
        ...


class MemoryAttemptStore:
    """In-process counters, for unit tests and single-process use."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    async def incr_many(self, group: str, keys: Sequence[str]) -> list[int]:
        values = []
        for key in keys:
            value = self.counts.get((group, key), 0) + 1
            self.counts[(group, key)] = value
            values.append(value)
        return values

    async def clear_many(self, group: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.counts.pop((group, key), None)


# KEYS: the counters. ARGV: their TTL in seconds. Returns the new counts in order.
_INCR_MANY = """
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return out
"""


class RedisAttemptStore:
    """Counters in Redis (`<namespace>:attempts:<group>:<key>`), one round trip per call (the
    increments of a fetched batch are one script call: a pipeline of 2 commands per record cost
    more to encode than the round trip it saved)."""

    def __init__(self, url_or_client: str | aioredis.Redis, namespace: str = "ringrift",
                 ttl_s: int = 7 * 24 * 3600) -> None:
        self._owned = isinstance(url_or_client, str)
        self._redis = aioredis.from_url(url_or_client) if isinstance(url_or_client, str) else url_or_client
        self._prefix = f"{namespace}:attempts:"
        self._ttl_s = ttl_s
        self._incr_many = self._redis.register_script(_INCR_MANY)

    def _key(self, group: str, key: str) -> str:
        return f"{self._prefix}{group}:{key}"

    async def incr_many(self, group: str, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            counts = await self._incr_many(keys=[self._key(group, key) for key in keys], args=[self._ttl_s])
        except (redis_errors.RedisError, OSError) as exc:
            raise translate_redis_error(exc, "attempt store: increment attempt counters") from exc
        return [int(value) for value in counts]

    async def clear_many(self, group: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(*(self._key(group, key) for key in keys))
        await self._execute(pipe, "clear attempt counters")

    async def close(self) -> None:
        """Close the connection pool if this store created it from a URL."""
        if self._owned:
            await self._redis.aclose()

    @staticmethod
    async def _execute(pipe: Pipeline, what: str) -> list:
        try:
            return await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise translate_redis_error(exc, f"attempt store: {what}") from exc
