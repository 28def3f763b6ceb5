"""Appending to streams: a flush of XADDs is one script call per stream, not a pipeline of commands.

redis-py builds, packs and parses every command of a pipeline in Python: a pipelined XADD costs about
33 µs of CPU on the bench machine, more than everything else in a publish. The same entries given to
a script as the arguments of one call cost 8-9 µs each (measured with 64 entries a call). The script
adds each entry with its own `redis.pcall`, so an entry that fails (the key is not a stream, an ACL
refuses it) fails alone, with its error in its place in the reply, as in a pipeline.

    appender = StreamAppender(client, maxlen=1_000_000)
    results = await appender.append([(topic, {b"event": value}), ...])   # an id or an error each

A call carries at most `_CALL_BYTES` of values (Redis refuses a request past its query-buffer limit),
so a large flush is cut into several calls, in order. When a call fails as a whole (the
connection), the calls after it are not tried: their entries get the same error, so a flush waits
out one timeout, not one per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc

from brokers._redis_errors import translate_redis_error
from brokers.errors import BrokerError

__all__ = ["StreamAppender"]

# KEYS[1]: the stream. ARGV[1]: the approximate MAXLEN. ARGV[2]: a JSON array, the number of field-value
# pairs of each entry; then the entries' fields and values, flat, in order. Returns an id (or the
# error) per entry.
_APPEND = """
local pairs_of = cjson.decode(ARGV[2])
local ids, at = {}, 3
for i, n in ipairs(pairs_of) do
  local last = at + 2 * n - 1
  ids[i] = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, at, last))
  at = last + 1
end
return ids
"""
_CALL_BYTES = 8 * 1024 * 1024
_json = msgspec.json.encode

Entry = tuple[str, dict[bytes, bytes]]  # (stream, its fields)


class StreamAppender:
    def __init__(self, client: aioredis.Redis, maxlen: int) -> None:
        self._script = client.register_script(_APPEND)
        self._maxlen = str(maxlen)

    async def append(self, entries: Sequence[Entry]) -> list[str | BrokerError]:
        """Add `entries` (each stream's in their order); one id per entry, or the error that entry
        met. A call that fails as a whole fails its entries and those of the calls after it."""
        results: list[str | BrokerError | None] = [None] * len(entries)
        for topic, call in _calls(entries):
            counts, fields = [], []
            for index in call:
                entry = entries[index][1]
                counts.append(len(entry))
                for name, value in entry.items():
                    fields += (name, value)
            try:
                replies = await self._script(keys=[topic], args=[self._maxlen, _json(counts), *fields])
            except (rexc.RedisError, OSError) as exc:
                error = translate_redis_error(exc, "publish")
                return [error if result is None else result for result in results]
            for index, reply in zip(call, replies, strict=True):
                results[index] = translate_redis_error(reply, "publish") if isinstance(reply, Exception) \
                    else reply.decode()
        return results  # type: ignore[return-value]


def _calls(entries: Sequence[Entry]) -> list[tuple[str, list[int]]]:
    """The entries' indexes grouped by stream (in order), each group cut at `_CALL_BYTES` of values."""
    calls: list[tuple[str, list[int]]] = []
    filling: dict[str, list[int]] = {}  # stream -> the indexes of its call being filled
    size: dict[str, int] = {}  # stream -> bytes in that call
    for index, (topic, fields) in enumerate(entries):
        n = sum(map(len, fields.values()))
        call = filling.get(topic)
        if call is None or size[topic] + n > _CALL_BYTES:
            call = filling[topic] = []
            calls.append((topic, call))
            size[topic] = 0
        call.append(index)
        size[topic] += n
    return calls
