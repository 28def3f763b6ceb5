"""What a sync asks for and what it answers: `SyncRequest`, `SyncResponse`, `SyncBackend`, and the
backend selection of the API reference (section 3), in its order:

    1. an ephemeral node (this node is ephemeral, or `prefer_ephemeral`)  -> EPHEMERAL
    2. priority high or critical                                           -> CLUSTER_SYNC
    3. explicit targets (non-empty and not ["all"])                        -> ROUTER
    4. otherwise                                                           -> AUTO_SYNC

`SyncRequest` keeps the reference's fields and defaults and adds three, all optional: `sources`
(pull only from these nodes), `paths` (only these data-directory paths, e.g. "models/x.pth") and
`request_id` (a fresh UUID: the correlation id of the commands and their answers). A request is
validated when it is made: a bad data type, priority, timeout or bandwidth raises `SyncRequestError`
with one line saying what is accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from coordination.sync_manifest import DATA_TYPES

__all__ = ["PRIORITIES", "SYNC_DATA_TYPES", "SyncBackend", "SyncRequest", "SyncRequestError", "SyncResponse",
           "select_backend"]

SYNC_DATA_TYPES = (*DATA_TYPES, "all")
PRIORITIES = ("low", "normal", "high", "critical")


class SyncRequestError(ValueError):
    """A sync request that cannot be carried out as given (the message says what is accepted)."""


class SyncBackend(Enum):
    AUTO_SYNC = "auto_sync"  # every target pulls what its peers hold and it lacks
    CLUSTER_SYNC = "cluster_data_sync"  # deprecated alias: broadcast to every eligible node, high priority
    DISTRIBUTED = "distributed"  # the low-level transfer itself, into this process's data directory
    EPHEMERAL = "ephemeral_sync"  # an ephemeral node pushes its data out: durable nodes pull from it
    ROUTER = "router"  # specific targets, each choosing its sources by freshness and load


@dataclass
class SyncRequest:
    data_type: str = "games"  # "games", "models", "npz", "all"
    targets: list[str] | None = None  # None (or ["all"]): every eligible node
    board_type: str | None = None
    num_players: int | None = None
    priority: str = "normal"  # "low", "normal", "high", "critical"
    timeout_seconds: float = 300.0
    bandwidth_limit_mbps: float | None = None
    exclude_nodes: list[str] = field(default_factory=list)  # neither targets nor sources
    prefer_ephemeral: bool = False
    require_confirmation: bool = False
    sources: list[str] | None = None  # None: any node holding the data
    paths: list[str] | None = None  # None: every file of the data type(s) that passes the filters
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if self.data_type not in SYNC_DATA_TYPES:
            raise SyncRequestError(f"data_type {self.data_type!r}: use one of {', '.join(SYNC_DATA_TYPES)}")
        if self.priority not in PRIORITIES:
            raise SyncRequestError(f"priority {self.priority!r}: use one of {', '.join(PRIORITIES)}")
        if not self.timeout_seconds > 0:
            raise SyncRequestError(f"timeout_seconds must be > 0 (got {self.timeout_seconds!r})")
        if self.bandwidth_limit_mbps is not None and not self.bandwidth_limit_mbps > 0:
            raise SyncRequestError(f"bandwidth_limit_mbps must be > 0 or None (got {self.bandwidth_limit_mbps!r})")
        if self.num_players is not None and (isinstance(self.num_players, bool) or self.num_players < 1):
            raise SyncRequestError(f"num_players must be a positive integer (got {self.num_players!r})")
        for name in ("targets", "sources", "paths", "exclude_nodes"):
            value = getattr(self, name)
            if isinstance(value, str):  # a lone name where a list belongs: accept it as a list of one
                setattr(self, name, [value])
            elif value is not None and not all(isinstance(item, str) and item for item in value):
                raise SyncRequestError(f"{name} must be a list of non-empty names (got {value!r})")

    @property
    def data_types(self) -> tuple[str, ...]:
        """The kinds of files the request covers ("all" is the three)."""
        return DATA_TYPES if self.data_type == "all" else (self.data_type,)

    @property
    def explicit_targets(self) -> list[str] | None:
        """The named targets, or None when the request means every eligible node."""
        if not self.targets or self.targets == ["all"]:
            return None
        return list(self.targets)

    @classmethod
    def coerce(cls, request: SyncRequest | Mapping[str, Any] | str, **overrides: Any) -> SyncRequest:
        """A request from a SyncRequest, a dict of its fields or a data type name, with overrides."""
        if isinstance(request, SyncRequest):
            if not overrides:
                return request
            values = {f.name: getattr(request, f.name) for f in fields(cls)}
        elif isinstance(request, str):
            values = {"data_type": request}
        elif isinstance(request, Mapping):
            values = dict(request)
        else:
            raise SyncRequestError("a sync request is a SyncRequest, a dict or a data type, "
                                   f"not {type(request).__name__}")
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SyncRequestError(f"unknown sync request field(s): {', '.join(unknown)}")
        return cls(**values)


@dataclass
class SyncResponse:
    success: bool
    backend_used: SyncBackend
    nodes_synced: int = 0  # targets that confirmed the sync finished
    bytes_transferred: int = 0  # bytes the targets pulled for this request
    duration_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # "node: message"
    details: dict[str, Any] = field(default_factory=dict)  # request_id, targets, per-node outcome

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "backend_used": self.backend_used.value, "nodes_synced": self.nodes_synced,
                "bytes_transferred": self.bytes_transferred, "duration_seconds": self.duration_seconds,
                "errors": list(self.errors), "details": self.details}


def select_backend(request: SyncRequest, *, ephemeral_node: bool = False) -> SyncBackend:
    """The backend for `request`, in the reference's order (module docstring)."""
    if ephemeral_node or request.prefer_ephemeral:
        return SyncBackend.EPHEMERAL
    if request.priority in ("high", "critical"):
        return SyncBackend.CLUSTER_SYNC
    if request.explicit_targets is not None:
        return SyncBackend.ROUTER
    return SyncBackend.AUTO_SYNC
