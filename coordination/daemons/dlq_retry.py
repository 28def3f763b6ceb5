"""DLQ_RETRY: re-drives dead letters through the router on the original's schedule.

Every 60 s of clock time one pass reads the dead-letter topic (`router.dlq`) and, for each letter of
this node (`node_id`) and this router's consumer group (or none: spool "publish" letters):

* a letter without a readable event (stages decode, validate) is abandoned at once: nothing to re-drive;
* a pending letter with 5 tries is abandoned, and so is one whose first failure is 168 h old (>=);
* a pending letter is due once `min(60 x 2^tries, 3600)` s passed since its last try (its failure
  for the first try); at most 10 are re-driven per pass, oldest first.

A re-drive re-publishes the event through `router.publish` with source `dlq_retry:<dead_letter_id>`,
only to the bus the letter came from (data, stage or cross), addressed to the letter's consumer group
(`target_group`: every other group skips it). Dedup: the publish has a NEW event id,
`redrive_event_id(letter, try)` (the same for a repeated try, so a re-drive repeated after a crash is
dropped), whose `parent_event_id` is the dead event's id (same trace and correlation ids), so the
group that marked the old id "failed" handles it again; its content hash passes too, because the
failing group dropped its hash mark. A publish that the buses accepted marks the letter `redriven`:
that means re-published, not recovered.
If the handler fails again the router writes a NEW dead letter whose event source names the old one;
the pass links them (`failed_again_as` on the old status, `parent_id` on the new), and the new letter
inherits the chain's tries, last try and first failure, so a poison event is tried 5 times in all,
60/120/240/480/960 s apart, then abandoned. Letters of one event (several handlers failed) that are
due in the same pass are re-driven by one publish.

Per-letter status lives in coordination.dlq_status (shared with `coord dlq`): the Redis hash
`<ns>:dlq:status`, or process memory for a memory:// router. A pass works on `pending` letters only
(one that `coord dlq redrive` is re-driving or re-drove is left alone); a short lock per letter keeps
two DLQ_RETRY processes of one group from re-driving the same letter. Each pass announces, awaited,
`DLQ_EVENTS_REPLAYED` when it re-drove something and `DLQ_STALE_EVENTS` when 50 or more letters are
pending.
The instance exposes `last_progress` (the end of its last pass) for the watchdog.

Registration:

    manager.register_factory(DaemonType.DLQ_RETRY, dlq_retry.factory(manager, router),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordination.daemon_clock import Clock, SystemClock
from coordination.daemons.watchdog import clock_pause, manager_clock
from coordination.dlq import DeadLetter
from coordination.dlq_status import (
    SOURCE_PREFIX,
    LetterStatus,
    StatusStore,
    current_statuses,
    redrive_event_id,
    status_store_for,
)
from coordination.protocols import HealthCheckResult
from schemas.envelope import RouterEvent

__all__ = ["ABANDON_AFTER", "BACKOFF_BASE", "BACKOFF_CAP", "MAX_PER_PASS", "MAX_TRIES", "PASS_INTERVAL",
           "STALE_THRESHOLD", "DlqRetryDaemon", "backoff", "factory"]

log = logging.getLogger(__name__)

PASS_INTERVAL = 60.0
BACKOFF_BASE = 60.0
BACKOFF_CAP = 3600.0
MAX_TRIES = 5
ABANDON_AFTER = 168 * 3600.0
STALE_THRESHOLD = 50
MAX_PER_PASS = 10
PENDING_UNHEALTHY = 1000
_LOCK_TTL_S = 60.0


def backoff(tries: int) -> float:
    """Seconds between try `tries` and the next: 60 x 2^tries, at most an hour."""
    return min(BACKOFF_BASE * 2 ** min(tries, 32), BACKOFF_CAP)


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
        self._store = store or status_store_for(router.config)
        self._by = f"dlq_retry@{router.config.node_id}"
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
        now = self._clock.time()
        statuses, dirty = current_statuses(letters, await self._store.all(), now, self._by)
        report = PassReport()
        redriven_events: dict[str, str] = {}  # dead event id -> its re-drive's event id, this pass
        for letter in letters:
            status = statuses[letter.dead_letter_id]
            if status.state != "pending":
                continue
            verdict = self._verdict(status, letter, now)
            if verdict is not None and verdict.startswith("abandon:"):
                status.reason = verdict[8:]
                status.record("abandoned", now, self._by, status.reason)
                dirty.add(status.dead_letter_id)
                report.abandoned.append(status.dead_letter_id)
            elif verdict == "due" and (status.event_id in redriven_events or
                                       len(report.redriven) + len(report.failed_tries) < self.max_per_pass):
                if await self._try(letter, statuses, now, redriven_events, report):
                    dirty.add(status.dead_letter_id)
        for key in dirty:
            await self._store.put(statuses[key])
        report.pending = sum(1 for s in statuses.values() if s.state == "pending")
        self._account(report)
        await self._announce(report)
        self.last_progress = self._clock.time()
        return report

    async def _try(self, letter: DeadLetter, statuses: dict[str, LetterStatus], now: float,
                   redriven_events: dict[str, str], report: PassReport) -> bool:
        """Re-drive one due letter; True when its status changed (and must be written)."""
        status = statuses[letter.dead_letter_id]
        if status.event_id in redriven_events:  # another letter of this event was re-driven just now
            status.redriven_as, status.redriven_by = redriven_events[status.event_id], self._by
            status.target_group = letter.consumer_group
            status.record("redriven", now, self._by, f"with {status.redriven_as}, one publish for the event")
            report.redriven.append(status.dead_letter_id)
            return True
        if not await self._store.lock(status.dead_letter_id, _LOCK_TTL_S):
            return False  # another DLQ_RETRY of this group is on it
        try:
            fresh = await self._store.get(status.dead_letter_id)
            if fresh is not None and fresh.state != "pending":  # `coord dlq redrive` or purge got there first
                statuses[status.dead_letter_id] = fresh
                return False
            tries = status.tries + 1
            status.tries, status.last_try_at = tries, now
            try:
                event = await self._redrive(letter, redrive_event_id(letter.dead_letter_id, tries))
            except Exception as exc:
                status.reason = f"{type(exc).__name__}: {exc}"
                log.warning("re-drive of dead letter %s failed (try %d/%d): %s", status.dead_letter_id, tries,
                            MAX_TRIES, status.reason)
                report.failed_tries.append(status.dead_letter_id)
                abandon = tries >= MAX_TRIES
                status.record("abandoned" if abandon else "pending", now, self._by, f"try {tries}: {status.reason}")
                if abandon:
                    report.abandoned.append(status.dead_letter_id)
            else:
                status.redriven_as, status.redriven_by, status.reason = event.event_id, self._by, ""
                status.target_group = letter.consumer_group
                status.record("redriven", now, self._by, f"try {tries} as {event.event_id}")
                redriven_events[status.event_id] = event.event_id
                report.redriven.append(status.dead_letter_id)
            return True
        finally:
            await self._store.unlock(status.dead_letter_id)

    async def _redrive(self, letter: DeadLetter, event_id: str) -> RouterEvent:
        dead = letter.event
        assert dead is not None
        bus = letter.bus
        return await self._router.publish(
            dead.event_type, dead.payload, f"{SOURCE_PREFIX}{letter.dead_letter_id}",
            route_to_data_bus=bus in ("data", ""), route_to_stage_bus=bus in ("stage", ""),
            route_to_cross_process=bus in ("cross", ""), event_id=event_id, parent_event_id=dead.event_id,
            trace_id=dead.trace_id or None, correlation_id=dead.correlation_id,
            target_group=letter.consumer_group or None)

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
