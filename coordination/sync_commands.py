"""The sync control plane's messages: a command to target nodes, and their answers, as router events.

    command  SYNC_REQUEST          payload = SyncCommand (request_id, targets, data types, filters,
                                   sources, exclude, priority, bandwidth, deadline, requester)
    answers  DATA_SYNC_STARTED     {request_id, node_id, host, planned_files, planned_bytes, sources}
             DATA_SYNC_COMPLETED   {request_id, node_id, host, files, shared_files, bytes_transferred,
                                    duration, games_synced, ...}
             DATA_SYNC_FAILED      {request_id, node_id, host, error, files, bytes_transferred, duration}

Every message's correlation id is the request id. Commands ride the cross-process bus (Kafka) only:
their targets are other nodes, so the requester's node-local Redis buses are no use to them (without
Kafka, a single node, they ride the data bus). One command names all its targets; each node's AUTO_SYNC
daemon reads the bus in a consumer group of its own (`daemon.auto_sync.<node_id>`) and acts only on
commands naming it, so a command for B never lands on C however many nodes share a daemon type.
Answers are ordinary events (data bus of the answering node and the cross bus), so pipelines can
subscribe to DATA_SYNC_COMPLETED as before.

`AnswerWatcher` collects one request's answers without joining any consumer group: it re-reads the
bus from a little before the newest answer seen (`broker.read(since=...)`, as `coord tail --follow`
does), skipping record ids it has seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from brokers.base import Broker
from brokers.errors import TopicNotFound
from coordination.config import RouterConfig
from coordination.sync_executor import PullOutcome
from coordination.sync_planner import SyncFilter
from schemas.envelope import RouterEvent

__all__ = ["ANSWER_TYPES", "COMMAND_TYPE", "COMPLETED", "FAILED", "STARTED", "AnswerWatcher", "CommandError",
           "NodeProgress", "SyncCommand", "command_routes", "completed_payload", "failed_payload",
           "started_payload"]

COMMAND_TYPE = "SYNC_REQUEST"
STARTED, COMPLETED, FAILED = "DATA_SYNC_STARTED", "DATA_SYNC_COMPLETED", "DATA_SYNC_FAILED"
ANSWER_TYPES = frozenset({STARTED, COMPLETED, FAILED})
LOOKBACK_S = 5.0  # re-read window: a record may carry an older timestamp than one already seen


class CommandError(ValueError):
    """A SYNC_REQUEST payload that is not a sync command (the message names the field)."""


class SyncCommand(msgspec.Struct, kw_only=True, omit_defaults=True):
    request_id: str
    targets: list[str]
    data_types: list[str]
    deadline: float  # epoch seconds; a target that reads the command later ignores it
    board_type: str | None = None
    num_players: int | None = None
    paths: list[str] | None = None
    sources: list[str] | None = None
    exclude: list[str] = msgspec.field(default_factory=list)
    priority: str = "normal"
    bandwidth_limit_mbps: float | None = None
    requester: str = ""
    backend: str = ""

    def payload(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_event(cls, event: RouterEvent) -> SyncCommand:
        try:
            return msgspec.convert(event.payload, type=cls, strict=False)
        except msgspec.ValidationError as exc:
            raise CommandError(f"malformed {COMMAND_TYPE} {event.event_id}: {exc}") from None

    def addressed_to(self, node_id: str) -> bool:
        return node_id in self.targets

    def sync_filter(self) -> SyncFilter:
        return SyncFilter.of(self.data_types, board_type=self.board_type, num_players=self.num_players,
                             paths=self.paths)


def command_routes(config: RouterConfig) -> dict[str, bool]:
    """`router.publish` options for a command: the cross bus alone (the data bus without Kafka)."""
    return {"route_to_data_bus": not config.kafka_enabled, "route_to_stage_bus": False,
            "route_to_cross_process": True}


def _base(command: SyncCommand | None, node_id: str) -> dict[str, Any]:
    """Fields every answer carries; `command` None: a gossip cycle's own DATA_SYNC_COMPLETED."""
    if command is None:
        return {"request_id": "", "node_id": node_id, "host": node_id, "sync_type": "auto_sync"}
    return {"request_id": command.request_id, "node_id": node_id, "host": node_id,
            "data_types": command.data_types, "sync_type": command.backend}


def started_payload(command: SyncCommand, node_id: str, planned_files: int, planned_bytes: int,
                    sources: list[str]) -> dict[str, Any]:
    return {**_base(command, node_id), "planned_files": planned_files, "planned_bytes": planned_bytes,
            "sources": sources, "targets": [node_id]}


def completed_payload(command: SyncCommand | None, node_id: str, outcome: PullOutcome) -> dict[str, Any]:
    games = sum(1 for path in outcome.files if path.startswith("games/"))
    return {**_base(command, node_id), "files": outcome.files, "shared_files": outcome.shared,
            "bytes_transferred": outcome.bytes_transferred, "duration": round(outcome.duration_s, 3),
            "games_synced": games, "unreachable_peers": outcome.unreachable}


def failed_payload(command: SyncCommand, node_id: str, error: str,
                   outcome: PullOutcome | None = None) -> dict[str, Any]:
    outcome = outcome or PullOutcome()
    return {**_base(command, node_id), "error": error, "files": outcome.files, "failed_files": outcome.failed,
            "bytes_transferred": outcome.bytes_transferred, "duration": round(outcome.duration_s, 3)}


Status = Literal["requested", "started", "completed", "failed", "timeout", "down"]


@dataclass
class NodeProgress:
    """What the requester knows of one target."""

    node_id: str
    status: Status = "requested"
    planned_files: int = 0
    planned_bytes: int = 0
    files: int = 0
    shared_files: int = 0
    bytes_transferred: int = 0
    duration_seconds: float = 0.0
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "timeout", "down")

    def apply(self, event: RouterEvent) -> None:
        p = event.payload
        if event.event_type == STARTED and self.status == "requested":
            self.status = "started"
            self.planned_files = int(p.get("planned_files", 0))
            self.planned_bytes = int(p.get("planned_bytes", 0))
        elif event.event_type in (COMPLETED, FAILED) and not self.finished:
            self.status = "completed" if event.event_type == COMPLETED else "failed"
            self.files = len(p.get("files") or [])
            self.shared_files = len(p.get("shared_files") or [])
            self.bytes_transferred = int(p.get("bytes_transferred", 0))
            self.duration_seconds = float(p.get("duration", 0.0))
            self.error = str(p.get("error", ""))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AnswerWatcher:
    """The answers to one request, read from `topic` on `broker` (module docstring)."""

    def __init__(self, broker: Broker, topic: str, request_id: str, since: float) -> None:
        self.broker = broker
        self.topic = topic
        self.request_id = request_id
        self._newest = since
        self._seen: dict[str, float] = {}

    async def poll(self) -> list[RouterEvent]:
        horizon = self._newest - LOOKBACK_S
        found: list[RouterEvent] = []
        try:
            async for record in self.broker.read(self.topic, since=datetime.fromtimestamp(horizon, UTC)):
                if record.record_id in self._seen:
                    continue
                self._seen[record.record_id] = record.timestamp
                self._newest = max(self._newest, record.timestamp)
                event = record.event
                if event is not None and event.event_type in ANSWER_TYPES and self._ours(event):
                    found.append(event)
        except TopicNotFound:
            return []
        self._seen = {rid: ts for rid, ts in self._seen.items() if ts >= horizon}
        return found

    def _ours(self, event: RouterEvent) -> bool:
        return event.correlation_id == self.request_id or event.payload.get("request_id") == self.request_id
