"""Daemon types, states, per-daemon info and the manager's configuration.

    from coordination.daemon_types import DaemonType, DaemonState, DaemonInfo, DaemonManagerConfig

`DaemonType` has the catalog's 122 members (generated into `coordination.daemon_catalog`, with the
critical set, startup order, deprecated set and profiles). A daemon the enum does not know is a
`CustomDaemonType`: every manager call that takes a daemon type also takes a plain string, so
`manager.register_factory("MY_DAEMON", factory)` works without editing the enum. A string naming a
catalog type in any spelling (`"AUTO_SYNC"`, `"auto_sync"`) resolves to the enum member, anything
else to `CustomDaemonType(name="MY_DAEMON", value="my_daemon")`.

`DaemonManagerConfig` has exactly the fields and defaults of the API reference (section 1).
`dependency_wait_timeout` is 30 s as documented there (the original code used 60 s).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from coordination.daemon_catalog import (
    CRITICAL_DAEMONS,
    DAEMON_PROFILES,
    DAEMON_SPECS,
    DAEMON_STARTUP_ORDER,
    DEPRECATED_DAEMONS,
    DEPRECATION_REPLACEMENTS,
    DaemonSpec,
    DaemonType,
)
from coordination.protocols import HealthCheckResult

__all__ = [
    "CRITICAL_DAEMONS",
    "DAEMON_PROFILES",
    "DAEMON_SPECS",
    "DAEMON_STARTUP_ORDER",
    "DEPRECATED_DAEMONS",
    "DEPRECATION_REPLACEMENTS",
    "CustomDaemonType",
    "DaemonInfo",
    "DaemonKey",
    "DaemonManagerConfig",
    "DaemonSpec",
    "DaemonState",
    "DaemonType",
    "DaemonTypeLike",
    "is_critical",
    "resolve_daemon_type",
]


class DaemonState(Enum):
    """Lifecycle state of a daemon under the manager (the catalog's 8 states)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"
    RESTARTING = "restarting"
    IMPORT_FAILED = "import_failed"
    DEGRADED = "degraded"


_CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BY_SPELLING: dict[str, DaemonType] = {s: t for t in DaemonType for s in (t.name, t.value)}


@dataclass(frozen=True)
class CustomDaemonType:
    """A daemon type outside the catalog, e.g. a user's `MY_DAEMON`. Looks like an enum member:
    `.name` is upper case, `.value` lower case; equal and hashed by name."""

    name: str
    value: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not _CUSTOM_NAME.match(self.name):
            raise ValueError(f"daemon type name {self.name!r}: use letters, digits and _, starting with a letter")
        upper = self.name.upper()
        if upper in DaemonType.__members__:
            raise ValueError(f"{upper} is a built-in daemon type: use DaemonType.{upper}")
        object.__setattr__(self, "name", upper)
        object.__setattr__(self, "value", upper.lower())

    def __str__(self) -> str:
        return self.name


DaemonKey = DaemonType | CustomDaemonType
DaemonTypeLike = DaemonType | CustomDaemonType | str


def resolve_daemon_type(daemon_type: DaemonTypeLike) -> DaemonKey:
    """The enum member for a known type (any spelling), else a CustomDaemonType."""
    if isinstance(daemon_type, DaemonType | CustomDaemonType):
        return daemon_type
    if not isinstance(daemon_type, str):
        raise TypeError(f"a daemon type is a DaemonType or a str, not {type(daemon_type).__name__}")
    text = daemon_type.strip()
    known = _BY_SPELLING.get(text) or _BY_SPELLING.get(text.upper()) or _BY_SPELLING.get(text.lower())
    return known if known is not None else CustomDaemonType(text)


def is_critical(daemon_type: DaemonKey) -> bool:
    return daemon_type in CRITICAL_DAEMONS


@dataclass
class DaemonInfo:
    """What the manager knows about one registered daemon (defaults as in the original)."""

    daemon_type: DaemonKey
    state: DaemonState = DaemonState.STOPPED
    task: asyncio.Task[None] | None = None
    start_time: float = 0.0
    restart_count: int = 0
    last_error: str | None = None
    health_check_interval: float = 60.0
    auto_restart: bool = True
    max_restarts: int = 5
    restart_delay: float = 5.0
    startup_grace_period: float = 60.0
    depends_on: list[DaemonKey] = field(default_factory=list)
    soft_depends_on: list[DaemonKey] = field(default_factory=list)
    startup_mode: str = "degraded"
    degraded_mode: bool = False
    ready_timeout: float = 30.0
    last_failure_time: float = 0.0
    stable_since: float = 0.0
    import_error: str | None = None
    ready_event: asyncio.Event | None = None
    instance: Any = None
    last_health: HealthCheckResult | None = None
    last_health_time: float = 0.0

    @property
    def name(self) -> str:
        """The daemon's wire name (the type's lower-case value)."""
        return self.daemon_type.value

    @property
    def uptime_seconds(self) -> float:
        if self.state is not DaemonState.RUNNING or self.start_time <= 0:
            return 0.0
        return max(0.0, time.time() - self.start_time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no task or instance)."""
        return {
            "daemon_type": self.name, "state": self.state.value, "uptime_seconds": self.uptime_seconds,
            "restart_count": self.restart_count, "last_error": self.last_error, "auto_restart": self.auto_restart,
            "max_restarts": self.max_restarts, "depends_on": [d.value for d in self.depends_on],
            "degraded_mode": self.degraded_mode, "critical": is_critical(self.daemon_type),
            "health": self.last_health.to_dict() if self.last_health is not None else None,
        }


@dataclass(frozen=True)
class DaemonManagerConfig:
    """The manager's settings, exactly those of the API reference (seconds throughout).

    `max_restart_attempts` and `auto_restart_failed` are the defaults of `register_factory`'s
    `max_restarts` and `auto_restart`; `health_check_interval` / `critical_daemon_health_interval`
    the default health interval of ordinary / critical daemons. `auto_start` and
    `enable_coordination_wiring` are accepted for compatibility and read by the node agent and the
    bootstrap, not by the manager. With `strict_registry_validation`, `start()` raises
    `DependencyError` where it would otherwise log and return False.
    """

    auto_start: bool = False
    enable_coordination_wiring: bool = True
    dependency_wait_timeout: float = 30.0
    dependency_poll_interval: float = 0.5
    health_check_interval: float = 30.0
    shutdown_timeout: float = 30.0
    force_kill_timeout: float = 5.0
    auto_restart_failed: bool = True
    strict_registry_validation: bool = False
    max_restart_attempts: int = 5
    recovery_cooldown: float = 10.0
    critical_daemon_health_interval: float = 15.0

    def __post_init__(self) -> None:
        positive = ("dependency_poll_interval", "health_check_interval", "critical_daemon_health_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DaemonManagerConfig.{name} must be > 0")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"DaemonManagerConfig.{f.name} must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> DaemonManagerConfig:
        """Defaults, with RINGRIFT_DAEMON_SHUTDOWN_GRACE (shutdown_timeout), RINGRIFT_DAEMON_HEALTH_TIMEOUT
        (force_kill_timeout), RINGRIFT_DAEMON_MAX_CONSECUTIVE_ERRORS (max_restart_attempts),
        RINGRIFT_DAEMON_DEPENDENCY_TIMEOUT and _POLL when set; `overrides` win."""
        env = os.environ if environ is None else environ
        names = {"shutdown_timeout": "RINGRIFT_DAEMON_SHUTDOWN_GRACE",
                 "force_kill_timeout": "RINGRIFT_DAEMON_HEALTH_TIMEOUT",
                 "max_restart_attempts": "RINGRIFT_DAEMON_MAX_CONSECUTIVE_ERRORS",
                 "dependency_wait_timeout": "RINGRIFT_DAEMON_DEPENDENCY_TIMEOUT",
                 "dependency_poll_interval": "RINGRIFT_DAEMON_DEPENDENCY_POLL"}
        values: dict[str, Any] = {}
        for name, var in names.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    number = float(raw)
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not a number") from None
                values[name] = int(number) if name == "max_restart_attempts" else number
        values.update(overrides)
        return cls(**values)
