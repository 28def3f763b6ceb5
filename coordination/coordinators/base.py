"""The one coordinator class: a declarative table of subscriptions over a live state view.

A coordinator is data. Its table says which event types it subscribes to, how each updates its
`StateView` (coordinators.rules), and optionally a reaction that publishes follow-up events:

    class TrainingCoordinator(Coordinator):
        name = "training_coordinator"
        table = (
            On("TRAINING_STARTED", Track("runs", CONFIG, "running")),
            On("TRAINING_REQUESTED", Count("requests"), react=refuse_when_running),
        )
        alarms = {"runs": ("timed_out",)}      # entries in these statuses make health DEGRADED

    coordinator = TrainingCoordinator(get_router())
    coordinator.wire()                         # router.subscribe for each event type (no loop needed)
    coordinator.view.entry("runs", "hex8_2p")  # {"status": "running", ...}
    coordinator.get_status(); coordinator.health_check(); coordinator.shutdown()

A reaction is `react(coordinator, event, change) -> iterable of (event_type, payload)`, where
`change` is what the entry's first Track/Flag rule did. It runs only when the coordinator reacts
(`react=True`, the bootstrap's `enable_integrations`) and, for an `On(..., requires="x")`, when the
setting `x` is true. `On(..., part="p")` belongs to a part of the coordinator that can be left out
(`parts=`). The handler is async, so it runs on the router's loop and follow-ups are awaited.

Each follow-up's payload names the event that caused it (`cause_event_id`): the same reaction to
the same event, by two processes, is then one content hash, which the router deduplicates; two
reactions to two events are never mistaken for duplicates.

Failure handling: a malformed payload or a failing rule or reaction is counted as an error of the
coordinator (`errors_count`, `last_error`; it weighs on `health_check`) and never raised, since
handling it again would not help. A follow-up whose publish fails does raise, so the router retries
the handler; the view is not updated twice: the follow-ups still owed for that event id are kept
and only those are published on the retry.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from coordination.contracts import CoordinatorStatus
from coordination.coordinators.rules import Change, MalformedEvent, Rule, StateView
from coordination.protocols import HealthCheckResult
from schemas.envelope import RouterEvent
from schemas.events import is_known_event_type, normalize_event_type

if TYPE_CHECKING:
    from coordination.event_router import UnifiedEventRouter

__all__ = ["Coordinator", "FollowUp", "On", "Reaction", "entering"]

log = logging.getLogger(__name__)
FollowUp = tuple[str, dict[str, Any]]
Reaction = Callable[["Coordinator", RouterEvent, Change | None], Iterable[FollowUp]]
_OUTBOX_LIMIT = 1000


def entering(follow_up: str, key_field: str, *, unless: tuple[str, ...] = (), **constants: Any) -> Reaction:
    """A reaction publishing `follow_up` {key_field: <entry key>, "reason": <event type, lower case>,
    **constants} when a Track rule changed the entry's status from one not in `unless`."""

    def react(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
        if change is None or not change.changed or change.before in unless:
            return []
        return [(follow_up, {key_field: change.key, "reason": event.event_type.lower(), **constants})]

    react.__qualname__ = f"entering({follow_up})"
    return react


class On:
    """One row of a coordinator's table: an event type, its rules, an optional reaction."""

    __slots__ = ("event_type", "part", "react", "requires", "rules")

    def __init__(self, event_type: str, *rules: Rule, react: Reaction | None = None, part: str = "",
                 requires: str = "") -> None:
        if not is_known_event_type(event_type) or normalize_event_type(event_type) != event_type:
            raise ValueError(f"{event_type!r} is not a catalog event type NAME")
        self.event_type, self.rules, self.react, self.part, self.requires = event_type, rules, react, part, requires


class Coordinator:
    """Subclasses set `name` and `table` (and optionally `alarms`, `alarm_flags`, `settings_defaults`)."""

    name: ClassVar[str]
    table: ClassVar[tuple[On, ...]]
    alarms: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    alarm_flags: ClassVar[tuple[str, ...]] = ()
    settings_defaults: ClassVar[Mapping[str, Any]] = {}
    max_entries: ClassVar[int] = 1000

    def __init__(self, router: UnifiedEventRouter, *, react: bool = True, parts: Iterable[str] | None = None,
                 **settings: Any) -> None:
        unknown = set(settings) - set(self.settings_defaults)
        if unknown:
            raise TypeError(f"{self.name} has no setting(s) {', '.join(sorted(unknown))}")
        all_parts = {on.part for on in self.table if on.part}
        self.parts = frozenset(all_parts if parts is None else parts)
        if self.parts - all_parts:
            raise ValueError(f"{self.name} has no part(s) {', '.join(sorted(self.parts - all_parts))}")
        self.router = router
        self.react = react
        self.settings: dict[str, Any] = {**self.settings_defaults, **settings}
        self.view = StateView(self.max_entries)
        self._routes: dict[str, list[On]] = {}
        for on in self.table:
            if not on.part or on.part in self.parts:
                self._routes.setdefault(on.event_type, []).append(on)
        self._subscribed: list[str] = []
        self._outbox: OrderedDict[str, list[FollowUp]] = OrderedDict()
        self._started = time.monotonic()
        self.events_processed = 0
        self.errors_count = 0
        self.reactions_published = 0
        self.last_error: str | None = None
        self.last_event_at: float | None = None

    # -- wiring ------------------------------------------------------------------------------------

    @property
    def event_types(self) -> list[str]:
        return list(self._routes)

    @property
    def subscribed(self) -> bool:
        return bool(self._subscribed)

    def wire(self) -> None:
        """Subscribe the handler to every event type of the table (all or none). Idempotent."""
        if self._subscribed:
            return
        try:
            for event_type in self._routes:
                self.router.subscribe(event_type, self.handle)
                self._subscribed.append(event_type)
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Unsubscribe from everything; the view stays readable."""
        subscribed, self._subscribed = self._subscribed, []
        for event_type in subscribed:
            self.router.unsubscribe(event_type, self.handle)

    # -- handling ----------------------------------------------------------------------------------

    async def handle(self, event: RouterEvent) -> None:
        """The router's handler: update the view, then publish the follow-ups."""
        with self.view.lock:
            owed = self._outbox.pop(event.event_id, None)
            if owed is None:
                owed = self._apply(event)
        while owed:
            event_type, payload = owed[0]
            try:
                await self.router.publish(event_type, {**payload, "cause_event_id": event.event_id}, source=self.name)
            except BaseException:
                with self.view.lock:
                    self._outbox[event.event_id] = owed
                    while len(self._outbox) > _OUTBOX_LIMIT:
                        self._outbox.popitem(last=False)
                raise
            owed.pop(0)
            self.reactions_published += 1

    def _apply(self, event: RouterEvent) -> list[FollowUp]:
        self.events_processed += 1
        self.last_event_at = time.time()
        follow_ups: list[FollowUp] = []
        for on in self._routes.get(event.event_type, ()):
            try:
                change: Change | None = None
                for rule in on.rules:
                    outcome = rule.apply(self.view, event)
                    change = change or outcome
                if on.react is not None and self.react and (not on.requires or self.settings.get(on.requires)):
                    follow_ups.extend(on.react(self, event, change))
            except MalformedEvent as exc:
                self._error(str(exc))
                log.warning("%s: %s", self.name, exc)
            except Exception as exc:
                self._error(f"{type(exc).__name__}: {exc} (handling {event.event_type} {event.event_id})")
                log.exception("%s failed handling %s %s", self.name, event.event_type, event.event_id)
        return follow_ups

    def _error(self, message: str) -> None:
        self.errors_count += 1
        self.last_error = message

    # -- what it exposes ---------------------------------------------------------------------------

    def _alarm_messages(self) -> list[str]:
        messages = []
        for collection, statuses in self.alarms.items():
            for status in statuses:
                count = len(self.view.keys_with_status(collection, status))
                if count:
                    messages.append(f"{count} {collection} {status}")
        messages += [f"{flag} raised" for flag in self.alarm_flags if self.view.flag(flag)]
        return messages

    def get_status(self) -> dict[str, Any]:
        return {
            "name": self.name, "subscribed": self.subscribed, "event_types": self.event_types,
            "parts": sorted(self.parts), "reacting": self.react, "settings": dict(self.settings),
            "events_processed": self.events_processed, "errors_count": self.errors_count,
            "last_error": self.last_error, "last_event_at": self.last_event_at,
            "reactions_published": self.reactions_published,
            "uptime_seconds": round(time.monotonic() - self._started, 3), **self.view.snapshot(),
        }

    def health_check(self) -> HealthCheckResult:
        """STOPPED when not subscribed; ERROR above a 10 % error rate; DEGRADED (still healthy) while
        an alarm status or flag is present; else RUNNING."""
        if not self.subscribed:
            return HealthCheckResult(False, CoordinatorStatus.STOPPED, f"{self.name} is not subscribed",
                                     details={"events_processed": self.events_processed})
        result = HealthCheckResult.from_metrics(time.monotonic() - self._started, self.events_processed,
                                                self.errors_count, last_error=self.last_error)
        alarms = self._alarm_messages()
        if result.healthy and alarms:
            return HealthCheckResult.degraded("; ".join(alarms), **result.details)  # type: ignore[attr-defined]
        return result
