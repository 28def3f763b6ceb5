"""Effectively-once handling per consumer group: event-id and content-hash marks with a TTL.

The router (coordination.event_router) decides what to do with a verdict; this module keeps the marks,
in the node's Redis or in process memory, so that nothing above brokers/ talks to Redis itself.

Keys (one Redis per group; a group spread over nodes points at one shared Redis):

    <ns>:dedup:<group>:id:<event_id>     "p:<position>"  in flight (TTL = lease)
                                         "done" | "dup" | "failed"           (TTL = id_ttl, 24 h)
    <ns>:dedup:<group>:hash:<hash>       <event_id> of the first handler     (TTL = content window)

`claim(event, position)` is one Lua script, so of two racing members exactly one gets NEW:

    id mark absent, hash mark absent (or ours)   -> NEW (set both marks)
    id mark absent, hash mark of another id      -> DUPLICATE_CONTENT (id marked "dup")
    id mark = "p:<this position>"                -> NEW again: the same record redelivered after its
                                                    handler's process died (takes the claim over);
                                                    CRASHED once that happened max_takeovers times
                                                    (counted in <id key>:takeovers, so the count
                                                    survives the processes it kills)
    any other id mark                            -> DUPLICATE_ID

`commit` marks the id done; `fail` marks it failed and drops the hash mark (an identical event
published later may run); `release` deletes both marks so a re-drive or a retry may run.
Content dedup is skipped (`content=False`) for exempt types and for publishes with dedup=False.
A bounded LRU of settled ids sits in front, so repeated ids skip the round trip.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from brokers._redis_errors import translate_redis_error
from brokers.settings import RedisSettings
from schemas.envelope import RouterEvent

__all__ = ["DedupStore", "MemoryDedupStore", "RedisDedupStore", "Verdict", "connect_dedup"]


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE_ID = "duplicate_id"
    DUPLICATE_CONTENT = "duplicate_content"
    CRASHED = "crashed"  # its handling killed the process max_takeovers times: dead-letter it


class DedupStore(Protocol):
    async def claim(self, event: RouterEvent, position: str, *, content: bool = True) -> Verdict: ...
    async def commit(self, event: RouterEvent) -> None: ...
    async def fail(self, event: RouterEvent) -> None: ...
    async def release(self, event: RouterEvent) -> None: ...
    async def close(self) -> None: ...


class _SettledCache:
    """Bounded LRU of event ids whose mark is final ("done"/"dup"/"failed")."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        return False

    def add(self, event_id: str) -> None:
        if self._size:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)

    def discard(self, event_id: str) -> None:
        self._ids.pop(event_id, None)


_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v then
  if v == ARGV[1] then
    local n = redis.call('INCR', KEYS[3])
    redis.call('PEXPIRE', KEYS[3], ARGV[5])
    if n >= tonumber(ARGV[6]) then return 4 end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 0
  end
  if string.sub(v, 1, 2) == 'p:' then return 3 end
  return 1
end
if KEYS[2] ~= '' then
  local h = redis.call('GET', KEYS[2])
  if h and h ~= ARGV[4] then
    redis.call('SET', KEYS[1], 'dup', 'PX', ARGV[5])
    return 2
  end
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
"""
_DROP_HASH = """
if KEYS[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 0
"""
_CODES = {0: Verdict.NEW, 1: Verdict.DUPLICATE_ID, 2: Verdict.DUPLICATE_CONTENT, 3: Verdict.DUPLICATE_ID,
          4: Verdict.CRASHED}


class _Base:
    def __init__(self, namespace: str, group: str, *, window_s: float, id_ttl_s: float, lease_s: float,
                 max_takeovers: int = 4, cache_size: int = 10_000) -> None:
        self._prefix = f"{namespace}:dedup:{group}:"
        self.max_takeovers = max_takeovers
        self.window_s = window_s
        self.id_ttl_s = id_ttl_s
        self.lease_s = lease_s
        self._settled = _SettledCache(cache_size)

    def _keys(self, event: RouterEvent, content: bool) -> tuple[str, str]:
        use_hash = content and self.window_s > 0 and event.content_hash
        return (f"{self._prefix}id:{event.event_id}",
                f"{self._prefix}hash:{event.content_hash}" if use_hash else "")


class RedisDedupStore(_Base):
    """The marks in Redis (see the module docstring); one Lua round trip per claim."""

    def __init__(self, url: str, namespace: str, group: str, **options: float) -> None:
        super().__init__(namespace, group, **options)  # type: ignore[arg-type]
        s = RedisSettings.from_url(url)
        self._redis = aioredis.Redis.from_url(url, username=s.username, password=s.password,
                                              socket_connect_timeout=s.connect_timeout_s,
                                              socket_timeout=s.socket_timeout_s)
        self._claim = self._redis.register_script(_CLAIM)
        self._drop = self._redis.register_script(_DROP_HASH)

    async def claim(self, event: RouterEvent, position: str, *, content: bool = True) -> Verdict:
        if event.event_id in self._settled:
            return Verdict.DUPLICATE_ID
        keys = [*self._keys(event, content)]
        keys.append(keys[0] + ":takeovers")
        args = [f"p:{position}", _secs(self.lease_s), _secs(self.window_s), event.event_id, _secs(self.id_ttl_s),
                str(self.max_takeovers)]
        code = int(await _call(self._claim(keys=keys, args=args), "dedup claim"))
        if code in (1, 2):
            self._settled.add(event.event_id)
        return _CODES[code]

    async def commit(self, event: RouterEvent) -> None:
        key = self._keys(event, False)[0]
        await _call(self._redis.set(key, "done", px=int(_secs(self.id_ttl_s))), "dedup commit")
        self._settled.add(event.event_id)

    async def fail(self, event: RouterEvent) -> None:
        keys = self._keys(event, True)
        await _call(self._drop(keys=list(keys), args=[event.event_id, "failed", _secs(self.id_ttl_s)]),
                    "dedup fail")
        self._settled.add(event.event_id)

    async def release(self, event: RouterEvent) -> None:
        self._settled.discard(event.event_id)
        keys = self._keys(event, True)
        await _call(self._drop(keys=list(keys), args=[event.event_id, "", "0"]), "dedup release")

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryDedupStore(_Base):
    """The same semantics in process memory (for memory:// buses); stores of one name share marks."""

    _shared: dict[str, dict[str, tuple[str, float]]] = {}

    def __init__(self, name: str, namespace: str, group: str, **options: float) -> None:
        super().__init__(namespace, group, **options)  # type: ignore[arg-type]
        self._marks = self._shared.setdefault(name, {})

    def _get(self, key: str) -> str | None:
        found = self._marks.get(key)
        if found is None or found[1] <= time.monotonic():
            self._marks.pop(key, None)
            return None
        return found[0]

    def _set(self, key: str, value: str, ttl: float) -> None:
        self._marks[key] = (value, time.monotonic() + ttl)

    async def claim(self, event: RouterEvent, position: str, *, content: bool = True) -> Verdict:
        if event.event_id in self._settled:
            return Verdict.DUPLICATE_ID
        id_key, hash_key = self._keys(event, content)
        mark = self._get(id_key)
        if mark is not None:
            if mark == f"p:{position}":
                takeovers = int(self._get(id_key + ":takeovers") or 0) + 1
                self._set(id_key + ":takeovers", str(takeovers), self.id_ttl_s)
                if takeovers >= self.max_takeovers:
                    return Verdict.CRASHED
                self._set(id_key, mark, self.lease_s)
                return Verdict.NEW
            if not mark.startswith("p:"):
                self._settled.add(event.event_id)
            return Verdict.DUPLICATE_ID
        if hash_key:
            owner = self._get(hash_key)
            if owner is not None and owner != event.event_id:
                self._set(id_key, "dup", self.id_ttl_s)
                self._settled.add(event.event_id)
                return Verdict.DUPLICATE_CONTENT
            self._set(hash_key, event.event_id, self.window_s)
        self._set(id_key, f"p:{position}", self.lease_s)
        return Verdict.NEW

    async def commit(self, event: RouterEvent) -> None:
        self._set(self._keys(event, False)[0], "done", self.id_ttl_s)
        self._settled.add(event.event_id)

    def _drop_hash(self, event: RouterEvent) -> str:
        id_key, hash_key = self._keys(event, True)
        if hash_key and self._get(hash_key) == event.event_id:
            self._marks.pop(hash_key, None)
        return id_key

    async def fail(self, event: RouterEvent) -> None:
        self._set(self._drop_hash(event), "failed", self.id_ttl_s)
        self._settled.add(event.event_id)

    async def release(self, event: RouterEvent) -> None:
        self._settled.discard(event.event_id)
        self._marks.pop(self._drop_hash(event), None)

    async def close(self) -> None:
        return None


def connect_dedup(url: str, namespace: str, group: str, *, window_s: float, id_ttl_s: float, lease_s: float,
                  max_takeovers: int = 4, cache_size: int = 10_000) -> RedisDedupStore | MemoryDedupStore:
    """The dedup store for the Redis URL of the per-node bus (memory:// gives the memory store)."""
    options = {"window_s": window_s, "id_ttl_s": id_ttl_s, "lease_s": lease_s, "max_takeovers": max_takeovers,
               "cache_size": cache_size}
    if url.startswith("memory://"):
        return MemoryDedupStore(url, namespace, group, **options)
    return RedisDedupStore(url, namespace, group, **options)


def _secs(value: float) -> str:
    """Milliseconds (the scripts use PX), at least 1."""
    return str(max(1, round(value * 1000)))


async def _call(awaitable: object, what: str) -> object:
    try:
        return await awaitable  # type: ignore[misc]
    except (redis_errors.RedisError, OSError) as exc:
        raise translate_redis_error(exc, what) from exc
