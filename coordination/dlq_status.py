"""What has been done about each dead letter: one status store for DLQ_RETRY and `coord dlq`.

    pending     nothing done yet (where every letter starts)
    redriving   a re-drive is under way: written, with the event id it publishes, BEFORE the publish,
                so that an interrupted `coord dlq redrive` resumes with the same id
    redriven    re-published (sent, not necessarily recovered: failing again makes a new letter)
    abandoned   given up: no readable event to re-drive, or DLQ_RETRY's limits were reached
    purged      hidden by `coord dlq purge` (on Kafka the record itself stays on the topic)

A `LetterStatus` holds the state, the tries of the letter's chain, the last try, the links (`parent_id`:
the letter whose re-drive failed again as this one; `failed_again_as`: the other way), who re-drove it
(`redriven_by`: "dlq_retry@<node>" or "cli@<host>"), as which event and to which group, and the last
moves (`history`). The store is the Redis hash `<ns>:dlq:status` (field = dead letter id, value = JSON)
on the node's Redis, or process memory for memory:// URLs.

Chains and ids. A re-drive is published with source `dlq_retry:<dead letter id>`; a letter whose event
has such a source is that letter's child (`initial_status` links the two; the child inherits the
chain's tries). A re-drive's event id is `redrive_event_id(dead letter id, try number)`: two re-drives
of the same try (an interrupted run repeated, or the CLI and DLQ_RETRY at the same moment) publish one
id, and the target group's dedup handles it once. A short lock per letter (`<ns>:dlq:lock:<id>`)
keeps two DLQ_RETRY processes of one group off one letter.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from brokers.errors import BrokerError, BrokerUnavailable
from brokers.settings import RedisSettings
from coordination.config import RouterConfig
from coordination.dlq import DeadLetter

__all__ = ["HISTORY_LIMIT", "NOT_REDRIVABLE_STAGES", "SOURCE_PREFIX", "STATES", "LetterStatus", "MemoryStatusStore",
           "RedisStatusStore", "State", "StatusStore", "current_statuses", "initial_status", "redrive_event_id",
           "status_store_for"]

State = Literal["pending", "redriving", "redriven", "abandoned", "purged"]
STATES: tuple[State, ...] = ("pending", "redriving", "redriven", "abandoned", "purged")
SOURCE_PREFIX = "dlq_retry:"
HISTORY_LIMIT = 20
NOT_REDRIVABLE_STAGES = ("decode", "validate")
_REDRIVE_NAMESPACE = uuid.UUID("0b7e4f57-2c1d-4d0e-a9a4-3d5e2f6c1a90")
T = TypeVar("T")


def redrive_event_id(dead_letter_id: str, try_number: int) -> str:
    """The event id of try `try_number` (1, 2, ...) at re-driving a letter: the same every time."""
    return str(uuid.uuid5(_REDRIVE_NAMESPACE, f"{dead_letter_id}:{try_number}"))


@dataclass
class LetterStatus:
    dead_letter_id: str
    state: State = "pending"
    tries: int = 0  # re-drives of the chain this letter belongs to, its own included
    last_try_at: float | None = None
    first_failure_at: float = 0.0  # of the chain's first letter
    root_id: str = ""  # the chain's first letter
    parent_id: str = ""  # the letter whose re-drive failed again as this one
    event_id: str = ""
    redriven_as: str = ""  # the event id of the re-drive (written with "redriving", before the publish)
    redriven_by: str = ""
    target_group: str = ""  # where the re-drive went ("" = every group)
    failed_again_as: str = ""  # the dead letter that re-drive produced
    reason: str = ""  # why abandoned, or the last try's error
    updated_at: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # {"at", "state", "by", "note"}

    def record(self, state: State, at: float, by: str, note: str = "") -> None:
        """Move to `state` and remember the move (the last HISTORY_LIMIT are kept)."""
        self.state, self.updated_at = state, at
        self.history.append({"at": at, "state": state, "by": by, "note": note})
        del self.history[:-HISTORY_LIMIT]

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> LetterStatus:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def initial_status(letter: DeadLetter, statuses: dict[str, LetterStatus], now: float, by: str) -> LetterStatus:
    """The status of a letter seen for the first time. When its event is a re-drive that failed again,
    the letter joins its parent's chain and the parent (in `statuses`) gets `failed_again_as`."""
    event = letter.event
    status = LetterStatus(letter.dead_letter_id, first_failure_at=letter.first_failure_at or now,
                          root_id=letter.dead_letter_id, event_id=event.event_id if event else "")
    parent = statuses.get(event.source[len(SOURCE_PREFIX):]) if event and \
        event.source.startswith(SOURCE_PREFIX) else None
    note = ""
    if parent is not None:
        status.parent_id, status.root_id = parent.dead_letter_id, parent.root_id
        status.tries, status.last_try_at = parent.tries, parent.last_try_at
        status.first_failure_at = parent.first_failure_at
        parent.failed_again_as, parent.updated_at = letter.dead_letter_id, now
        note = f"the re-drive of {parent.dead_letter_id} failed again"
    if event is None or letter.stage in NOT_REDRIVABLE_STAGES:
        status.reason = f"not re-drivable (stage {letter.stage})"
        status.record("abandoned", now, by, status.reason)
    else:
        status.record("pending", now, by, note)
    return status


def current_statuses(letters: Iterable[DeadLetter], stored: dict[str, LetterStatus], now: float,
                     by: str) -> tuple[dict[str, LetterStatus], set[str]]:
    """Every letter's status (the stored one, else `initial_status`; letters oldest first, so a parent
    comes before its child) and the ids of the statuses this made or changed, to be written."""
    statuses, changed = dict(stored), set()
    for letter in letters:
        if letter.dead_letter_id not in statuses:
            status = statuses[letter.dead_letter_id] = initial_status(letter, statuses, now, by)
            changed.add(letter.dead_letter_id)
            if status.parent_id:
                changed.add(status.parent_id)
    return statuses, changed


class StatusStore(Protocol):
    async def all(self) -> dict[str, LetterStatus]: ...
    async def get(self, dead_letter_id: str) -> LetterStatus | None: ...
    async def put(self, status: LetterStatus) -> None: ...
    async def lock(self, dead_letter_id: str, ttl_s: float) -> bool: ...
    async def unlock(self, dead_letter_id: str) -> None: ...
    async def close(self) -> None: ...


class MemoryStatusStore:
    """Statuses in process memory; stores of one name share them (memory:// routers)."""

    _shared: dict[str, dict[str, str]] = {}
    _locks: dict[str, set[str]] = {}

    def __init__(self, name: str) -> None:
        self._rows = self._shared.setdefault(name, {})
        self._held = self._locks.setdefault(name, set())

    async def all(self) -> dict[str, LetterStatus]:
        return {k: LetterStatus.decode(v) for k, v in self._rows.items()}

    async def get(self, dead_letter_id: str) -> LetterStatus | None:
        row = self._rows.get(dead_letter_id)
        return None if row is None else LetterStatus.decode(row)

    async def put(self, status: LetterStatus) -> None:
        self._rows[status.dead_letter_id] = status.encode()

    async def lock(self, dead_letter_id: str, ttl_s: float) -> bool:
        if dead_letter_id in self._held:
            return False
        self._held.add(dead_letter_id)
        return True

    async def unlock(self, dead_letter_id: str) -> None:
        self._held.discard(dead_letter_id)

    async def close(self) -> None:
        return None


class RedisStatusStore:
    """Statuses in the hash `<ns>:dlq:status`; locks `<ns>:dlq:lock:<id>` (SET NX PX). Redis errors
    come out as brokers.errors (BrokerUnavailable when Redis cannot be reached)."""

    def __init__(self, url: str, namespace: str) -> None:
        s = RedisSettings.from_url(url)
        self._redis = aioredis.Redis.from_url(url, username=s.username, password=s.password,
                                              socket_connect_timeout=s.connect_timeout_s,
                                              socket_timeout=s.socket_timeout_s)
        self.key = f"{namespace}:dlq:status"
        self._lock_prefix = f"{namespace}:dlq:lock:"

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"dead-letter status store: Redis unreachable ({what}): {exc}") from None
        except redis_errors.RedisError as exc:
            raise BrokerError(f"dead-letter status store ({what}): {exc}") from None

    async def all(self) -> dict[str, LetterStatus]:
        rows = await self._call("read", self._redis.hgetall(self.key))
        return {k.decode(): LetterStatus.decode(v) for k, v in rows.items()}

    async def get(self, dead_letter_id: str) -> LetterStatus | None:
        row = await self._call("read", self._redis.hget(self.key, dead_letter_id))
        return None if row is None else LetterStatus.decode(row)

    async def put(self, status: LetterStatus) -> None:
        await self._call("write", self._redis.hset(self.key, status.dead_letter_id, status.encode()))

    async def lock(self, dead_letter_id: str, ttl_s: float) -> bool:
        return bool(await self._call("lock", self._redis.set(self._lock_prefix + dead_letter_id, "1", nx=True,
                                                             px=max(1, int(ttl_s * 1000)))))

    async def unlock(self, dead_letter_id: str) -> None:
        await self._call("unlock", self._redis.delete(self._lock_prefix + dead_letter_id))

    async def close(self) -> None:
        await self._redis.aclose()


def status_store_for(config: RouterConfig) -> StatusStore:
    """The status store on the node's Redis (process memory for memory:// URLs)."""
    if config.redis_url.startswith("memory://"):
        return MemoryStatusStore(f"{config.redis_url}|{config.namespace}")
    return RedisStatusStore(config.redis_url, config.namespace)
