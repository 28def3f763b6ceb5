"""What a coordinator knows (its state view) and the declarative rules that update it from events.

A `StateView` has four parts:

    collections   name -> key -> entry: one entry per task, node, config, model...; an entry is the
                  merged payload fields of the events about it plus `status`, `event` (the last event
                  type) and `updated_at` (its timestamp); the least recently updated entries beyond
                  `max_entries` are dropped
    flags         name -> bool (backpressure active, quorum lost...)
    counters      name -> number (games synced, requests seen...)
    latest        slot -> the last payload of one kind (the leader, the cluster capacity...)

A rule says how one event changes it; a coordinator's table lists them per event type:

    Track("tasks", TASK, "running")        the entry keyed by the first of TASK's payload fields present
    Flag("backpressure", True)
    Count("games_synced", "games_synced")  add that payload number (1 per event when no field is named)
    Latest("leader")

`Track` and `Flag` return a `Change` (before and after) that a reaction can look at; the others None.
A payload lacking what a rule needs raises `MalformedEvent`, a one-line reason.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.envelope import RouterEvent

__all__ = ["CONFIG", "HOST", "MODEL", "NODE", "TASK", "Change", "Count", "Flag", "Latest", "MalformedEvent",
           "Rule", "StateView", "Track", "payload_key"]

# Payload fields that name what an event is about, tried in order (the original's emitters differ).
# A name with "@" joins several fields ("daemon_name@hostname"); it counts only when all are present.
TASK = ("task_id", "job_id", "work_id")
NODE = ("node_id", "host", "node", "hostname")
HOST = ("host", "node_id", "hostname")
CONFIG = ("config_key", "config")  # else board_type + num_players, e.g. hex8_2p
MODEL = ("model_id", "model_path")


class MalformedEvent(ValueError):
    """An event whose payload lacks what a coordinator's rule needs."""


def payload_key(event: RouterEvent, fields: tuple[str, ...]) -> str:
    """The first non-empty payload field of `fields`; a config key may also be board_type + num_players."""
    payload = event.payload
    for name in fields:
        values = [payload.get(part) for part in name.split("@")]
        if all(v not in (None, "") for v in values):
            return "@".join(str(v) for v in values)
    if "config_key" in fields and payload.get("board_type") and payload.get("num_players"):
        return f"{payload['board_type']}_{payload['num_players']}p"
    raise MalformedEvent(f"{event.event_type} event {event.event_id or '?'} names no {' or '.join(fields)}")


@dataclass(frozen=True)
class Change:
    """What a Track or Flag rule did: `before`/`after` are statuses (flag values); `previous`/`entry`
    the whole entry before and after (None for flags and for a new entry's `previous`)."""

    collection: str
    key: str
    before: Any
    after: Any
    previous: dict[str, Any] | None = None
    entry: dict[str, Any] | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


class StateView:
    """A coordinator's live view. Thread-safe: rules run under `lock`; readers get copies."""

    def __init__(self, max_entries: int = 1000) -> None:
        self.max_entries = max_entries
        self.lock = threading.RLock()
        self._collections: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self._flags: dict[str, bool] = {}
        self._counters: Counter[str] = Counter()
        self._latest: dict[str, dict[str, Any]] = {}

    # -- reading ---------------------------------------------------------------------------------

    def entry(self, collection: str, key: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._collections.get(collection, {}).get(key)
            return dict(found) if found is not None else None

    def entries(self, collection: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: dict(v) for k, v in self._collections.get(collection, {}).items()}

    def keys_with_status(self, collection: str, *statuses: str) -> list[str]:
        with self.lock:
            return [k for k, v in self._collections.get(collection, {}).items() if v["status"] in statuses]

    def flag(self, name: str) -> bool:
        with self.lock:
            return self._flags.get(name, False)

    def counter(self, name: str) -> float:
        with self.lock:
            return self._counters[name]

    def latest(self, slot: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._latest.get(slot)
            return dict(found) if found is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain data: collections (with a count per status), flags, counters, latest."""
        with self.lock:
            return {
                "collections": {name: {k: dict(v) for k, v in items.items()}
                                for name, items in self._collections.items()},
                "by_status": {name: dict(Counter(v["status"] for v in items.values()))
                              for name, items in self._collections.items()},
                "flags": dict(self._flags),
                "counters": dict(self._counters),
                "latest": {slot: dict(v) for slot, v in self._latest.items()},
            }

    # -- writing (rules only, under `lock`) -------------------------------------------------------

    def put(self, collection: str, key: str, entry: dict[str, Any]) -> None:
        items = self._collections.setdefault(collection, OrderedDict())
        items[key] = entry
        items.move_to_end(key)
        while len(items) > self.max_entries:
            items.popitem(last=False)

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        return self._collections.get(collection, {}).get(key)

    def set_flag(self, name: str, value: bool) -> bool:
        before, self._flags[name] = self._flags.get(name, False), value
        return before

    def add(self, name: str, amount: float) -> None:
        self._counters[name] += amount

    def set_latest(self, slot: str, value: dict[str, Any]) -> None:
        self._latest[slot] = value


class Rule(Protocol):
    def apply(self, view: StateView, event: RouterEvent) -> Change | None: ...


def _stamp(event: RouterEvent) -> dict[str, Any]:
    return {"event": event.event_type, "updated_at": event.timestamp}


@dataclass(frozen=True)
class Track:
    """Set the status of the entry the event is about, merging in the payload (or only `fields`).
    An event naming no key is malformed, unless `required` is False: then the rule does nothing."""

    collection: str
    key: tuple[str, ...]
    status: str
    fields: tuple[str, ...] = ()
    required: bool = True

    def apply(self, view: StateView, event: RouterEvent) -> Change | None:
        try:
            key = payload_key(event, self.key)
        except MalformedEvent:
            if self.required:
                raise
            return None
        previous = view.get(self.collection, key)
        data = event.payload if not self.fields else {f: event.payload[f] for f in self.fields if f in event.payload}
        entry = {**(previous or {}), **data, "status": self.status, **_stamp(event)}
        view.put(self.collection, key, entry)
        before = previous["status"] if previous else None
        return Change(self.collection, key, before, self.status, dict(previous) if previous else None, dict(entry))


@dataclass(frozen=True)
class Flag:
    """Raise or lower a flag."""

    name: str
    value: bool

    def apply(self, view: StateView, event: RouterEvent) -> Change:
        return Change("flags", self.name, view.set_flag(self.name, self.value), self.value)


@dataclass(frozen=True)
class Count:
    """Add 1, or the first of `field`'s payload numbers present (nothing when none is)."""

    counter: str
    field: str | tuple[str, ...] = ()

    def apply(self, view: StateView, event: RouterEvent) -> None:
        names = (self.field,) if isinstance(self.field, str) else self.field
        if not names:
            view.add(self.counter, 1)
            return
        for name in names:
            value = event.payload.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MalformedEvent(f"{event.event_type} event {event.event_id or '?'}: {name}={value!r} "
                                     "is not a number")
            view.add(self.counter, value)
            return


@dataclass(frozen=True)
class Latest:
    """Keep the event's payload (or only `fields`) as the latest of its kind."""

    slot: str
    fields: tuple[str, ...] = ()

    def apply(self, view: StateView, event: RouterEvent) -> None:
        data = event.payload if not self.fields else {f: event.payload[f] for f in self.fields if f in event.payload}
        view.set_latest(self.slot, {**data, **_stamp(event)})
