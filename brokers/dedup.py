"""Effectively-once handling per consumer group: event-id and content-hash marks with a TTL.

The router (coordination.event_router) decides what to do with a verdict; this module keeps the marks,
in the node's Redis or in process memory, so that nothing above brokers/ talks to Redis itself.

Keys (one Redis per group; a group spread over nodes points at one shared Redis):

    <ns>:dedup:<group>:id:<event_id>     "p:<position>"  in flight (TTL = lease)
                                         "done" | "dup" | "failed"           (TTL = id_ttl, 24 h)
    <ns>:dedup:<group>:hash:<hash>       <event_id> of the first handler     (TTL = content window)
    <ns>:dedup:<group>:replay:<event_id> N: replay N hands this event to the group again (TTL = id_ttl)
    <ns>:dedup:<group>:epoch             how many replays the group had (no TTL)

`claim(event, position)` is one Lua script, so of two racing members exactly one gets NEW:

    id mark absent, hash mark absent (or ours)   -> NEW (set both marks)
    id mark absent, hash mark of another id      -> DUPLICATE_CONTENT (id marked "dup")
    id mark = "p:<this position>"                -> NEW again: the same record redelivered after its
                                                    handler's process died (takes the claim over);
                                                    CRASHED once that happened max_takeovers times
                                                    (counted in <id key>:takeovers, so the count
                                                    survives the processes it kills)
    any other id mark                            -> DUPLICATE_ID

Replay (`coord replay --to-group`): `bump_epoch(event_ids)` writes a replay mark N for each event of the
replayed range, then counts the group's epoch up. The claim script reads an event's replay mark and,
when there is one, keeps that event's id and hash marks under `<ns>:dedup:<group>:e<N>:` instead: a
replayed event passes the group's dedup once more, and its copies (other buses, the same record
delivered again) are still dropped, as are events outside the range. Commit, fail and release settle
the marks of the epoch their claim used.

`commit` marks the id done; `fail` marks it failed and drops the hash mark (an identical event
published later may run); `release` deletes both marks so a re-drive or a retry may run.
Content dedup is skipped (`content=False`) for exempt types and for publishes with dedup=False.
A bounded LRU of settled ids sits in front, so repeated ids skip the round trip. It is emptied when
the group's epoch changes, which a store reads at least every EPOCH_REFRESH_S (1 s), so a member that
runs through a replay forgets what it settled before it (`coord replay` waits that long before it
moves the group).
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from brokers._redis_connection import connection_class
from brokers._redis_errors import translate_redis_error
from brokers.settings import RedisSettings
from schemas.envelope import RouterEvent

__all__ = ["EPOCH_REFRESH_S", "DedupStore", "MemoryDedupStore", "RedisDedupStore", "Verdict", "connect_dedup"]

EPOCH_REFRESH_S = 1.0
_json = msgspec.json.encode
_BATCH = 1000  # replay marks written per round trip


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE_ID = "duplicate_id"
    DUPLICATE_CONTENT = "duplicate_content"
    CRASHED = "crashed"  # its handling killed the process max_takeovers times: dead-letter it


class DedupStore(Protocol):
    async def claim(self, event: RouterEvent, position: str, *, content: bool = True) -> Verdict: ...
    async def claim_many(self, items: Sequence[tuple[RouterEvent, str, bool]]) -> list[Verdict]: ...
    async def commit_many(self, events: Sequence[RouterEvent]) -> None: ...
    async def commit(self, event: RouterEvent) -> None: ...
    async def fail(self, event: RouterEvent) -> None: ...
    async def release(self, event: RouterEvent) -> None: ...
    async def release_many(self, events: Sequence[RouterEvent]) -> None: ...
    async def bump_epoch(self, event_ids: Iterable[str]) -> int: ...
    async def drop_replay(self, event_ids: Iterable[str]) -> None: ...
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
        ids = self._ids
        if event_id in ids:
            ids.move_to_end(event_id)
        elif self._size:
            ids[event_id] = None
            if len(ids) > self._size:
                ids.popitem(last=False)

    def discard(self, event_id: str) -> None:
        self._ids.pop(event_id, None)

    def clear(self) -> None:
        self._ids.clear()


# The marks' prefix for an event: <ns>:dedup:<group>: in epoch 0, <ns>:dedup:<group>:e<N>: in replay N.
_EPOCH_PREFIX = """
local function marks(prefix, epoch)
  if epoch == '0' then return prefix end
  return prefix .. 'e' .. epoch .. ':'
end
"""
# Claims of a batch of events, one after the other (a later one sees an earlier one's marks).
# KEYS: the group's epoch. ARGV: lease, window, id TTL, max takeovers, prefix, then the batch as ONE
# JSON array, flat: per event its position, event id, content hash ('' = no content dedup). One
# argument instead of three per event: redis-py packs every argument in Python, which cost more than
# the script. Returns {group epoch, codes (one digit per event, as _CODES), {index, epoch, ...} of the
# events whose marks live in a replay epoch}. Redis runs scripts one at a time, so the script's own
# cost is kept low: a NEW event takes two SET NX GET (Redis >= 7.0), and replay marks are looked up
# only once the group had a replay (bump_epoch writes them before it counts the epoch up).
_CLAIM = _EPOCH_PREFIX + """
local g = redis.call('GET', KEYS[1]) or '0'
local lease, window, ttl, maxt, prefix = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local batch = cjson.decode(ARGV[6])
local codes, epochs = {}, {}
for i = 1, #batch, 3 do
  local pos, eid, hsh = 'p:' .. batch[i], batch[i + 1], batch[i + 2]
  local e = '0'
  if g ~= '0' then e = redis.call('GET', prefix .. 'replay:' .. eid) or '0' end
  local p = marks(prefix, e)
  local id = p .. 'id:' .. eid
  local code = 0
  local v = redis.call('SET', id, pos, 'NX', 'PX', lease, 'GET')
  if v then
    if v == pos then
      local n = redis.call('INCR', id .. ':takeovers')
      redis.call('PEXPIRE', id .. ':takeovers', ttl)
      if n >= maxt then code = 4 else redis.call('SET', id, pos, 'PX', lease) end
    elseif string.sub(v, 1, 2) == 'p:' then
      code = 3
    else
      code = 1
    end
  elseif hsh ~= '' then
    local hash = p .. 'hash:' .. hsh
    local h = redis.call('SET', hash, eid, 'NX', 'PX', window, 'GET')
    if h == eid then
      redis.call('SET', hash, eid, 'PX', window)
    elseif h then
      redis.call('SET', id, 'dup', 'PX', ttl)
      code = 2
    end
  end
  codes[#codes + 1] = code
  if e ~= '0' then
    epochs[#epochs + 1] = (i + 2) / 3
    epochs[#epochs + 1] = e
  end
end
return {g, table.concat(codes), epochs}
"""
# Commits of a batch. ARGV: prefix, id TTL, then the batch as one JSON array, flat: per event the epoch
# of its claim ('' = the event's current one), event id.
_COMMIT = _EPOCH_PREFIX + """
local prefix, ttl = ARGV[1], ARGV[2]
local batch = cjson.decode(ARGV[3])
for i = 1, #batch, 2 do
  local e, eid = batch[i], batch[i + 1]
  if e == '' then e = redis.call('GET', prefix .. 'replay:' .. eid) or '0' end
  redis.call('SET', marks(prefix, e) .. 'id:' .. eid, 'done', 'PX', ttl)
end
return #batch / 2
"""
# KEYS: replay mark of the event. ARGV: epoch of the claim ('' = the event's current one), prefix, event
# id, content hash whose mark to drop if ours ('' = keep), new id mark ('' = delete it), its TTL.
_SETTLE = _EPOCH_PREFIX + """
local e = ARGV[1]
if e == '' then e = redis.call('GET', KEYS[1]) or '0' end
local p = marks(ARGV[2], e)
local id = p .. 'id:' .. ARGV[3]
if ARGV[4] ~= '' then
  local hash = p .. 'hash:' .. ARGV[4]
  if redis.call('GET', hash) == ARGV[3] then redis.call('DEL', hash) end
end
if ARGV[5] == '' then redis.call('DEL', id) else redis.call('SET', id, ARGV[5], 'PX', ARGV[6]) end
return 0
"""
_CODES = {0: Verdict.NEW, 1: Verdict.DUPLICATE_ID, 2: Verdict.DUPLICATE_CONTENT, 3: Verdict.DUPLICATE_ID,
          4: Verdict.CRASHED}
_DIGITS = {ord(str(code)): verdict for code, verdict in _CODES.items()}  # the claim script's reply, per byte
_SETTLED_DIGITS = frozenset(b"12")  # final marks (3: in flight on another member)


class _Base:
    epoch_refresh_s = EPOCH_REFRESH_S

    def __init__(self, namespace: str, group: str, *, window_s: float, id_ttl_s: float, lease_s: float,
                 max_takeovers: int = 4, cache_size: int = 10_000) -> None:
        self._prefix = f"{namespace}:dedup:{group}:"
        self._epoch_key = self._prefix + "epoch"
        self.max_takeovers = max_takeovers
        self.window_s = window_s
        self.id_ttl_s = id_ttl_s
        self.lease_s = lease_s
        self._settled = _SettledCache(cache_size)
        self._claimed: dict[str, str] = {}  # event id -> epoch of its claim, until settled
        self._epoch: str | None = None  # the group's epoch as last read
        self._epoch_read_at = float("-inf")

    def _replay_key(self, event_id: str) -> str:
        return f"{self._prefix}replay:{event_id}"

    def _hash(self, event: RouterEvent, content: bool) -> str:
        return event.content_hash if content and self.window_s > 0 and event.content_hash else ""

    def _prefix_of(self, epoch: str) -> str:
        return self._prefix if epoch == "0" else f"{self._prefix}e{epoch}:"

    def _saw_epoch(self, epoch: str) -> None:
        """The group's epoch as just read: a change empties the LRU (a replay began)."""
        self._epoch_read_at = time.monotonic()
        if epoch != self._epoch:
            self._settled.clear()
            self._epoch = epoch

    def _epoch_stale(self) -> bool:
        return time.monotonic() - self._epoch_read_at >= self.epoch_refresh_s


class RedisDedupStore(_Base):
    """The marks in Redis (see the module docstring): one script call per batch of claims (a single
    claim is a batch of one) and one per batch of commits."""

    def __init__(self, url: str, namespace: str, group: str, **options: float) -> None:
        super().__init__(namespace, group, **options)  # type: ignore[arg-type]
        s = RedisSettings.from_url(url)
        self._redis = aioredis.Redis.from_url(url, username=s.username, password=s.password,
                                              socket_connect_timeout=s.connect_timeout_s,
                                              socket_timeout=s.socket_timeout_s,
                                              connection_class=connection_class(url))
        self._claim = self._redis.register_script(_CLAIM)
        self._commit = self._redis.register_script(_COMMIT)
        self._settle = self._redis.register_script(_SETTLE)

    async def claim(self, event: RouterEvent, position: str, *, content: bool = True) -> Verdict:
        return (await self.claim_many([(event, position, content)]))[0]

    async def claim_many(self, items: Sequence[tuple[RouterEvent, str, bool]]) -> list[Verdict]:
        """`claim` for (event, position, content) items in one round trip (one script call); verdicts
        in order. A later item sees an earlier one's marks (two identical events in one batch: the
        second is DUPLICATE_CONTENT)."""
        if self._epoch_stale():
            epoch = await _call(self._redis.get(self._epoch_key), "dedup epoch")
            self._saw_epoch(epoch.decode() if epoch else "0")  # type: ignore[attr-defined]
        settled = self._settled
        verdicts = [Verdict.DUPLICATE_ID] * len(items)
        asked = [index for index, item in enumerate(items) if item[0].event_id not in settled]
        if not asked:
            return verdicts
        batch: list[str] = []
        hashing = self.window_s > 0
        for index in asked:
            event, position, content = items[index]
            batch += (position, event.event_id, event.content_hash if content and hashing and event.content_hash
                      else "")
        args = [_secs(self.lease_s), _secs(self.window_s), _secs(self.id_ttl_s), str(self.max_takeovers),
                self._prefix, _json(batch)]
        group_epoch, codes, epochs = await _call(self._claim(keys=[self._epoch_key], args=args),  # type: ignore[misc]
                                                 "dedup claim")
        self._saw_epoch(group_epoch.decode())
        replayed = {int(epochs[k]) - 1: epochs[k + 1].decode() for k in range(0, len(epochs), 2)}
        claimed = self._claimed
        for k, (index, code) in enumerate(zip(asked, codes, strict=True)):
            verdict = verdicts[index] = _DIGITS[code]
            if verdict is Verdict.NEW or verdict is Verdict.CRASHED:
                claimed[items[index][0].event_id] = replayed.get(k, "0")
            elif code in _SETTLED_DIGITS:
                settled.add(items[index][0].event_id)
        return verdicts

    async def commit(self, event: RouterEvent) -> None:
        await self.commit_many([event])

    async def commit_many(self, events: Sequence[RouterEvent]) -> None:
        """`commit` for many events in one round trip."""
        if not events:
            return
        claimed, batch = self._claimed, []
        for event in events:
            batch += (claimed.pop(event.event_id, ""), event.event_id)
        await _call(self._commit(args=[self._prefix, _secs(self.id_ttl_s), _json(batch)]), "dedup commit")
        settled = self._settled
        for event in events:
            settled.add(event.event_id)

    def _settle_args(self, event: RouterEvent, *, drop_hash: bool, mark: str) -> tuple[list[str], list[str]]:
        """The settle script's keys and arguments for `event` (its claim is forgotten here)."""
        epoch = self._claimed.pop(event.event_id, "")
        return [self._replay_key(event.event_id)], [epoch, self._prefix, event.event_id,
                                                    self._hash(event, True) if drop_hash else "", mark,
                                                    _secs(self.id_ttl_s)]

    async def _settle_marks(self, event: RouterEvent, *, drop_hash: bool, mark: str, what: str) -> None:
        keys, args = self._settle_args(event, drop_hash=drop_hash, mark=mark)
        await _call(self._settle(keys=keys, args=args), what)

    async def fail(self, event: RouterEvent) -> None:
        await self._settle_marks(event, drop_hash=True, mark="failed", what="dedup fail")
        self._settled.add(event.event_id)

    async def release(self, event: RouterEvent) -> None:
        await self.release_many([event])

    async def release_many(self, events: Sequence[RouterEvent]) -> None:
        """`release` for many events in one round trip (claims made and never handled)."""
        if not events:
            return
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            self._settled.discard(event.event_id)
            keys, args = self._settle_args(event, drop_hash=True, mark="")
            await self._settle(keys=keys, args=args, client=pipe)  # queued in the pipeline
        await _call(pipe.execute(), "dedup release")

    async def bump_epoch(self, event_ids: Iterable[str]) -> int:
        """Start a replay: these events pass the group's dedup once more. Returns the replay's epoch."""
        current = await _call(self._redis.get(self._epoch_key), "dedup epoch")
        epoch = int(current or 0) + 1  # type: ignore[call-overload]
        ids = list(event_ids)
        for start in range(0, len(ids), _BATCH):
            pipe = self._redis.pipeline(transaction=False)
            for event_id in ids[start:start + _BATCH]:
                pipe.set(self._replay_key(event_id), epoch, px=int(_secs(self.id_ttl_s)))
            await _call(pipe.execute(), "dedup replay marks")
        # After the marks: a member that sees the new epoch finds them (its LRU is emptied then).
        await _call(self._redis.incr(self._epoch_key), "dedup epoch")
        return epoch

    async def drop_replay(self, event_ids: Iterable[str]) -> None:
        """Undo `bump_epoch`'s marks (the replay could not move the group)."""
        ids = list(event_ids)
        for start in range(0, len(ids), _BATCH):
            await _call(self._redis.delete(*[self._replay_key(i) for i in ids[start:start + _BATCH]]),
                        "dedup replay marks")

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
        if self._epoch_stale():
            self._saw_epoch(self._get(self._epoch_key) or "0")
        return self._claim(event, position, content)

    async def claim_many(self, items: Sequence[tuple[RouterEvent, str, bool]]) -> list[Verdict]:
        if self._epoch_stale():
            self._saw_epoch(self._get(self._epoch_key) or "0")
        return [self._claim(event, position, content) for event, position, content in items]

    def _claim(self, event: RouterEvent, position: str, content: bool) -> Verdict:
        if event.event_id in self._settled:
            return Verdict.DUPLICATE_ID
        # Replay marks exist only once the group had a replay (as in the Redis script).
        epoch = "0" if self._epoch_key not in self._marks else self._get(self._replay_key(event.event_id)) or "0"
        verdict = self._judge(event, position, self._prefix_of(epoch), self._hash(event, content))
        if verdict is Verdict.NEW or verdict is Verdict.CRASHED:
            self._claimed[event.event_id] = epoch
        return verdict

    async def commit_many(self, events: Sequence[RouterEvent]) -> None:
        for event in events:
            self._settle_marks(event, drop_hash=False, mark="done")
            self._settled.add(event.event_id)

    def _judge(self, event: RouterEvent, position: str, prefix: str, content_hash: str) -> Verdict:
        id_key = f"{prefix}id:{event.event_id}"
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
        if content_hash:
            hash_key = f"{prefix}hash:{content_hash}"
            owner = self._get(hash_key)
            if owner is not None and owner != event.event_id:
                self._set(id_key, "dup", self.id_ttl_s)
                self._settled.add(event.event_id)
                return Verdict.DUPLICATE_CONTENT
            self._set(hash_key, event.event_id, self.window_s)
        self._set(id_key, f"p:{position}", self.lease_s)
        return Verdict.NEW

    def _settle_marks(self, event: RouterEvent, *, drop_hash: bool, mark: str) -> None:
        epoch = self._claimed.pop(event.event_id, None) or self._get(self._replay_key(event.event_id)) or "0"
        prefix = self._prefix_of(epoch)
        content_hash = self._hash(event, True) if drop_hash else ""
        if content_hash and self._get(f"{prefix}hash:{content_hash}") == event.event_id:
            self._marks.pop(f"{prefix}hash:{content_hash}", None)
        if mark:
            self._set(f"{prefix}id:{event.event_id}", mark, self.id_ttl_s)
        else:
            self._marks.pop(f"{prefix}id:{event.event_id}", None)

    async def commit(self, event: RouterEvent) -> None:
        self._settle_marks(event, drop_hash=False, mark="done")
        self._settled.add(event.event_id)

    async def fail(self, event: RouterEvent) -> None:
        self._settle_marks(event, drop_hash=True, mark="failed")
        self._settled.add(event.event_id)

    async def release(self, event: RouterEvent) -> None:
        self._settled.discard(event.event_id)
        self._settle_marks(event, drop_hash=True, mark="")

    async def release_many(self, events: Sequence[RouterEvent]) -> None:
        for event in events:
            await self.release(event)

    async def bump_epoch(self, event_ids: Iterable[str]) -> int:
        epoch = int(self._get(self._epoch_key) or 0) + 1
        for event_id in event_ids:
            self._set(self._replay_key(event_id), str(epoch), self.id_ttl_s)
        self._set(self._epoch_key, str(epoch), float("inf"))
        return epoch

    async def drop_replay(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._marks.pop(self._replay_key(event_id), None)

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
