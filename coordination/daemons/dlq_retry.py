"""DLQ_RETRY: re-drives dead letters through the router on the original's schedule.

Every 60 s of clock time one pass reads the dead-letter topic (`router.dlq`) and, for each letter of
this node (`node_id`) and this router's consumer group (or none: spool "publish" letters):

* a letter without a readable event (stages decode, validate) is abandoned at once: nothing to re-drive;
* a pending letter with 5 tries is abandoned, and so is one whose first failure is 168 h old (>=);
* a pending letter is due once `min(60 x 2^tries, 3600)` s passed since its last try (its failure
  for the first try); at most 10 are re-driven per pass, oldest first.

A re-drive re-publishes the event through `router.publish` with source `dlq_retry:<dead_letter_id>`,
only to the bus the letter came from (data, stage or cross). Dedup: the publish makes a NEW event id
whose `parent_event_id` is the dead event's id (same trace and correlation ids), so the group that
marked the old id "failed" handles it again; its content hash passes too, because the failing group
dropped its hash mark and the first try comes after the 30 s content window of other groups. A
publish that the buses accepted marks the letter `redriven`: that means re-published, not recovered.
If the handler fails again the router writes a NEW dead letter whose event source names the old one;
the pass links them (`failed_again_as` on the old status, `parent_id` on the new), and the new letter
inherits the chain's tries, last try and first failure, so a poison event is tried 5 times in all,
60/120/240/480/960 s apart, then abandoned. Letters of one event (several handlers failed) that are
due in the same pass are re-driven by one publish.

Per-letter status (`LetterStatus`: state pending|redriven|abandoned, tries, last try, links) lives in
the Redis hash `<ns>:dlq:status` (field = dead letter id, value = JSON), or in process memory for a
memory:// router; a short Redis lock per letter (`<ns>:dlq:lock:<id>`) keeps two DLQ_RETRY processes
of one group from re-driving the same letter. Each pass announces, awaited, `DLQ_EVENTS_REPLAYED`
when it re-drove something and `DLQ_STALE_EVENTS` when 50 or more letters are pending.
The instance exposes `last_progress` (the end of its last pass) for the watchdog.

Registration:

    manager.register_factory(DaemonType.DLQ_RETRY, dlq_retry.factory(manager, router),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis

from brokers.settings import RedisSettings
from coordination import handlers
from coordination.daemon_clock import Clock, SystemClock
from coordination.daemons.watchdog import clock_pause, manager_clock
from coordination.dlq import DeadLetter
from coordination.protocols import HealthCheckResult
from schemas.envelope import RouterEvent

__all__ = ["ABANDON_AFTER", "BACKOFF_BASE", "BACKOFF_CAP", "MAX_PER_PASS", "MAX_TRIES", "PASS_INTERVAL",
           "SOURCE_PREFIX", "STALE_THRESHOLD", "DlqRetryDaemon", "LetterStatus", "MemoryStatusStore",
           "RedisStatusStore", "StatusStore", "backoff", "factory", "status_store_for"]

log = logging.getLogger(__name__)

PASS_INTERVAL = 60.0
BACKOFF_BASE = 60.0
BACKOFF_CAP = 3600.0
MAX_TRIES = 5
ABANDON_AFTER = 168 * 3600.0
STALE_THRESHOLD = 50
MAX_PER_PASS = 10
PENDING_UNHEALTHY = 1000
SOURCE_PREFIX = "dlq_retry:"
_NOT_REDRIVABLE = ("decode", "validate")
_LOCK_TTL_S = 60.0

State = Literal["pending", "redriven", "abandoned"]


def backoff(tries: int) -> float:
    """Seconds between try `tries` and the next: 60 x 2^tries, at most an hour."""
    return min(BACKOFF_BASE * 2 ** min(tries, 32), BACKOFF_CAP)


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
    redriven_as: str = ""  # the event id of the re-drive
    failed_again_as: str = ""  # the dead letter that re-drive produced
    reason: str = ""  # why abandoned, or the last try's error
    updated_at: float = 0.0

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes) -> LetterStatus:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class StatusStore(Protocol):
    async def all(self) -> dict[str, LetterStatus]: ...
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
    """Statuses in the hash `<ns>:dlq:status`; locks `<ns>:dlq:lock:<id>` (SET NX PX)."""

    def __init__(self, url: str, namespace: str) -> None:
        s = RedisSettings.from_url(url)
        self._redis = aioredis.Redis.from_url(url, username=s.username, password=s.password,
                                              socket_connect_timeout=s.connect_timeout_s,
                                              socket_timeout=s.socket_timeout_s)
        self.key = f"{namespace}:dlq:status"
        self._lock_prefix = f"{namespace}:dlq:lock:"

    async def all(self) -> dict[str, LetterStatus]:
        rows = await self._redis.hgetall(self.key)
        return {k.decode(): LetterStatus.decode(v) for k, v in rows.items()}

    async def put(self, status: LetterStatus) -> None:
        await self._redis.hset(self.key, status.dead_letter_id, status.encode())

    async def lock(self, dead_letter_id: str, ttl_s: float) -> bool:
        return bool(await self._redis.set(self._lock_prefix + dead_letter_id, "1", nx=True,
                                          px=max(1, int(ttl_s * 1000))))

    async def unlock(self, dead_letter_id: str) -> None:
        await self._redis.delete(self._lock_prefix + dead_letter_id)

    async def close(self) -> None:
        await self._redis.aclose()


def status_store_for(router: Any) -> StatusStore:
    """The status store next to the router's per-node bus (memory for memory:// URLs)."""
    c = router.config
    if c.redis_url.startswith("memory://"):
        return MemoryStatusStore(f"{c.redis_url}|{c.namespace}")
    return RedisStatusStore(c.redis_url, c.namespace)


@dataclass
class PassReport:
    redriven: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    failed_tries: list[str] = field(default_factory=list)
    pending: int = 0


class DlqRetryDaemon:
    """See the module docstring."""

    def __init__(self, router: Any, *, clock: Clock | None = None, store: StatusStore | None = None,
                 interval: float = PASS_INTERVAL, max_per_pass: int = MAX_PER_PASS) -> None:
        self._router = router
        self._clock = clock or SystemClock()
        self._own_store = store is None
        self._store = store or status_store_for(router)
        self.interval = interval
        self.max_per_pass = max_per_pass
        self._stopped = asyncio.Event()
        self.last_progress = self._clock.time()
        self.last_error: str | None = None
        self.last_report = PassReport()
        self.session = {"redriven": 0, "abandoned": 0, "failed_tries": 0, "passes": 0}

    # -- the daemon contract ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._stopped.clear()
        try:
            while not self._stopped.is_set():
                try:
                    await self.run_pass()
                    self.last_error = None
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("DLQ retry pass failed; retrying in %gs", self.interval)
                await clock_pause(self._clock, self.interval, self._stopped)
        finally:
            await self.close()

    async def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        """Close the status store when this daemon made it (run() does this when it ends)."""
        if self._own_store:
            await self._store.close()

    def health_check(self) -> HealthCheckResult:
        done = self.session["redriven"] + self.session["abandoned"]
        abandon_rate = self.session["abandoned"] / done if done else 0.0
        details = {**self.session, "pending": self.last_report.pending, "abandon_rate": round(abandon_rate, 3),
                   "last_progress": self.last_progress, "last_error": self.last_error}
        if self.last_error is not None:
            return HealthCheckResult.unhealthy(f"last pass failed: {self.last_error}", **details)
        if self.last_report.pending > PENDING_UNHEALTHY:
            return HealthCheckResult.unhealthy(f"{self.last_report.pending} dead letters pending", **details)
        if abandon_rate > 0.5:
            return HealthCheckResult.unhealthy(f"abandon rate {abandon_rate:.0%} > 50%", **details)
        return HealthCheckResult.healthy("OK", **details)

    # -- one pass --------------------------------------------------------------------------------------

    def _mine(self, letter: DeadLetter) -> bool:
        c = self._router.config
        return letter.node_id == c.node_id and letter.consumer_group in ("", c.group)

    async def statuses(self) -> dict[str, LetterStatus]:
        return await self._store.all()

    def _new_status(self, letter: DeadLetter, statuses: dict[str, LetterStatus], now: float) -> LetterStatus:
        event = letter.event
        status = LetterStatus(letter.dead_letter_id, first_failure_at=letter.first_failure_at or now,
                              root_id=letter.dead_letter_id, event_id=event.event_id if event else "",
                              updated_at=now)
        parent = statuses.get(event.source[len(SOURCE_PREFIX):]) if event and \
            event.source.startswith(SOURCE_PREFIX) else None
        if parent is not None:  # a re-drive that failed again: the chain goes on
            status.parent_id, status.root_id = parent.dead_letter_id, parent.root_id
            status.tries, status.last_try_at = parent.tries, parent.last_try_at
            status.first_failure_at = parent.first_failure_at
            parent.failed_again_as, parent.updated_at = letter.dead_letter_id, now
        if event is None or letter.stage in _NOT_REDRIVABLE:
            status.state, status.reason = "abandoned", f"not re-drivable (stage {letter.stage})"
        return status

    def _verdict(self, status: LetterStatus, letter: DeadLetter, now: float) -> str | None:
        """"abandon:<why>", "due", or None (wait)."""
        if status.tries >= MAX_TRIES:
            return f"abandon:{status.tries} tries"
        if now - status.first_failure_at >= ABANDON_AFTER:
            return f"abandon:older than {ABANDON_AFTER / 3600:g} h"
        since = status.last_try_at if status.last_try_at is not None else (letter.last_failure_at or now)
        return "due" if now - since >= backoff(status.tries) else None

    async def run_pass(self) -> PassReport:
        """One pass (see the module docstring); returns what it did."""
        if self._router.dlq is None:  # EVENT_ROUTER may still be connecting it
            await self._router.connect()
        dlq = self._router.dlq
        if dlq is None:
            raise RuntimeError("the router is not connected (no dead-letter queue)")
        letters = [x for x in await dlq.list() if self._mine(x)]
        statuses = await self._store.all()
        now = self._clock.time()
        report, dirty = PassReport(), set()
        for letter in letters:
            if letter.dead_letter_id not in statuses:
                statuses[letter.dead_letter_id] = self._new_status(letter, statuses, now)
                dirty.add(letter.dead_letter_id)
                parent_id = statuses[letter.dead_letter_id].parent_id
                if parent_id:
                    dirty.add(parent_id)
        redriven_events: dict[str, str] = {}  # dead event id -> its re-drive's event id, this pass
        for letter in letters:
            status = statuses[letter.dead_letter_id]
            if status.state != "pending":
                continue
            verdict = self._verdict(status, letter, now)
            if verdict is not None and verdict.startswith("abandon:"):
                status.state, status.reason, status.updated_at = "abandoned", verdict[8:], now
                dirty.add(status.dead_letter_id)
                report.abandoned.append(status.dead_letter_id)
            elif verdict == "due" and (status.event_id in redriven_events or
                                       len(report.redriven) + len(report.failed_tries) < self.max_per_pass):
                await self._try(letter, status, now, redriven_events, report)
                dirty.add(status.dead_letter_id)
        for key in dirty:
            await self._store.put(statuses[key])
        report.pending = sum(1 for s in statuses.values() if s.state == "pending")
        self._account(report)
        await self._announce(report)
        self.last_progress = self._clock.time()
        return report

    async def _try(self, letter: DeadLetter, status: LetterStatus, now: float, redriven_events: dict[str, str],
                   report: PassReport) -> None:
        if status.event_id in redriven_events:  # another letter of this event was re-driven just now
            status.state, status.redriven_as, status.updated_at = "redriven", redriven_events[status.event_id], now
            report.redriven.append(status.dead_letter_id)
            return
        if not await self._store.lock(status.dead_letter_id, _LOCK_TTL_S):
            return  # another DLQ_RETRY of this group is on it
        try:
            event = await self._redrive(letter)
        except Exception as exc:
            status.tries, status.last_try_at, status.updated_at = status.tries + 1, now, now
            status.reason = f"{type(exc).__name__}: {exc}"
            log.warning("re-drive of dead letter %s failed (try %d/%d): %s", status.dead_letter_id, status.tries,
                        MAX_TRIES, status.reason)
            report.failed_tries.append(status.dead_letter_id)
            if status.tries >= MAX_TRIES:
                status.state = "abandoned"
                report.abandoned.append(status.dead_letter_id)
        else:
            status.tries, status.last_try_at, status.updated_at = status.tries + 1, now, now
            status.state, status.redriven_as, status.reason = "redriven", event.event_id, ""
            redriven_events[status.event_id] = event.event_id
            report.redriven.append(status.dead_letter_id)
        finally:
            await self._store.unlock(status.dead_letter_id)

    async def _redrive(self, letter: DeadLetter) -> RouterEvent:
        assert letter.event is not None
        bus = letter.bus
        routes = {"route_to_data_bus": bus in ("data", ""), "route_to_stage_bus": bus in ("stage", ""),
                  "route_to_cross_process": bus in ("cross", "")}
        # The router names the running handler's event as parent of what is published in its context;
        # setting it here makes the re-drive a child of the dead event (new id, same trace).
        token = handlers._current.set(letter.event)
        try:
            return await self._router.publish(letter.event.event_type, letter.event.payload,
                                              f"{SOURCE_PREFIX}{letter.dead_letter_id}", **routes)
        finally:
            handlers._current.reset(token)

    def _account(self, report: PassReport) -> None:
        self.last_report = report
        self.session["passes"] += 1
        self.session["redriven"] += len(report.redriven)
        self.session["abandoned"] += len(report.abandoned)
        self.session["failed_tries"] += len(report.failed_tries)

    async def _announce(self, report: PassReport) -> None:
        announcements = []
        if report.redriven:
            announcements.append(("DLQ_EVENTS_REPLAYED", {"count": len(report.redriven),
                                                          "dead_letter_ids": report.redriven}))
        if report.pending >= STALE_THRESHOLD:
            announcements.append(("DLQ_STALE_EVENTS", {"pending_count": report.pending,
                                                       "threshold": STALE_THRESHOLD}))
        for event_type, payload in announcements:
            try:
                await self._router.publish(event_type, payload, source="dlq_retry")
            except Exception as exc:
                log.warning("could not announce %s: %s", event_type, exc)


def factory(manager: Any, router: Any, **options: Any) -> Callable[[], DlqRetryDaemon]:
    """The DLQ_RETRY factory: a new daemon per (re)start on the manager's clock; `options` go to
    `DlqRetryDaemon`."""
    options.setdefault("clock", manager_clock(manager))
    return lambda: DlqRetryDaemon(router, **options)
