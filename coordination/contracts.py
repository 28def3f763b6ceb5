"""Contracts shared by every coordinator and daemon: the status vocabulary.

`CoordinatorStatus` is the lifecycle status a component reports in its `HealthCheckResult`
(`coordination.protocols`). It is a str enum so that a status compares equal to, and serialises
as, its lower-case value (`CoordinatorStatus.RUNNING == "running"`). The ten values are the
catalog's `coordinator_status_values`.

This module imports nothing from the project, so any module may depend on it.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["CoordinatorStatus"]


class CoordinatorStatus(str, Enum):  # noqa: UP042 - a str mixin keeps `status == "running"` true
    """Lifecycle status of a coordinator or daemon, as reported by its health check."""

    INITIALIZING = "initializing"
    STARTING = "starting"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    DEGRADED = "degraded"

    def __str__(self) -> str:
        return self.value
