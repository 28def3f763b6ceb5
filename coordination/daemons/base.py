"""Event-driven daemons: `ConsumerDaemon` consumes its subscriptions in a group named after its type.

    class ExportTrigger(ConsumerDaemon):
        daemon_type = "EXPORT_TRIGGER"
        subscriptions = ("TRAINING_COMPLETED",)
        buses = ("cross",)                        # the default

        async def handle(self, event: RouterEvent) -> None:
            ...                                   # return: done; raise: retried, then dead-lettered

    manager.register_factory("EXPORT_TRIGGER", ExportTrigger.factory(RouterConfig.from_env()))

Each instance has its own `UnifiedEventRouter` whose consumer group is `daemon.<daemon_type>` (the
router's dedup scope too). On Kafka that group is cluster-wide: every process running the daemon, on
any node, shares the partitions, and a dead process's partitions go to the others after the session
timeout. On Redis (one per node) the group is shared by the node's processes; a dead member's
pending deliveries are claimed after `claim_idle_ms`. The daemon keeps nothing in memory that
matters: positions live in the brokers, the dedup marks in Redis.

`buses` picks what the daemon reads. A publish rides several buses, and the copies of one event on
a node's Redis and on the cluster's Kafka would reach two different processes of one daemon type,
so a cluster-wide daemon reads the cross-process bus alone. Without Kafka, "cross" means "data".
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from brokers.errors import ConfigurationError
from coordination.config import RouterConfig
from coordination.daemon_types import DaemonTypeLike, resolve_daemon_type
from coordination.daemons.lag_sampler import LagSampler
from coordination.event_router import UnifiedEventRouter
from coordination.protocols import HealthCheckResult
from schemas.envelope import RouterEvent

__all__ = ["Bus", "ConsumerDaemon", "daemon_router_config", "dead_consumers"]

log = logging.getLogger(__name__)

Bus = Literal["data", "stage", "cross"]
_BUSES: tuple[Bus, ...] = ("data", "stage", "cross")


def daemon_router_config(base: RouterConfig, daemon_type: DaemonTypeLike, *, per_node: bool = False) -> RouterConfig:
    """The router configuration of a daemon: group `daemon.<type>` (`daemon.<type>.<node_id>` when
    `per_node`), a member name unique to this process, and no spool (the process's own router holds
    the spool directory's lock)."""
    name = resolve_daemon_type(daemon_type).value
    group = f"daemon.{name}.{base.node_id}" if per_node else f"daemon.{name}"
    return dataclasses.replace(base, service_name=name, group_name=group,
                               consumer_name=f"daemon.{name}.{base.node_id}.{os.getpid()}", spool_dir=None)


def dead_consumers(router: UnifiedEventRouter) -> list[str]:
    """The names of the router's bus consumers that ended (each normally restarts itself on errors,
    so an ended one is a bug or a cancellation from outside)."""
    return [t.get_name() for t in router._consumers if t.done()]


class ConsumerDaemon(abc.ABC):
    """Subclasses set `daemon_type`, `subscriptions` (event types; empty: every event) and
    optionally `buses`, and implement `handle(event)`."""

    daemon_type: ClassVar[DaemonTypeLike]
    subscriptions: ClassVar[Sequence[str]] = ()
    buses: ClassVar[Sequence[Bus]] = ("cross",)
    max_error_rate: ClassVar[float] = 0.1  # above it health_check() is unhealthy (from_metrics)
    # True: every node's instance reads every event (group `daemon.<type>.<node_id>`), for work
    # addressed to a node (sync commands) rather than shared out among nodes
    group_per_node: ClassVar[bool] = False
    lag_interval_s: ClassVar[float] = 10.0  # how often the group's lag is read for health and readiness

    def __init__(self, config: RouterConfig | None = None) -> None:
        unknown = set(self.buses) - set(_BUSES)
        if unknown or not self.buses:
            raise ConfigurationError(f"{type(self).__name__}.buses {tuple(self.buses)}: use some of {_BUSES}")
        base = daemon_router_config(config or RouterConfig.from_env(), self.daemon_type, per_node=self.group_per_node)
        read = {b for b in self.buses if b != "cross" or base.kafka_enabled}
        if "cross" in self.buses and not base.kafka_enabled:
            read.add("data")
        self.config = dataclasses.replace(base, read_buses=frozenset(read))
        self.router = UnifiedEventRouter(self.config)
        for event_type in self.subscriptions or (None,):
            self.router.subscribe(event_type, self._on_event)
        self._stop = asyncio.Event()
        self._started_at: float | None = None
        self._handled = 0
        self._errors = 0
        self._last_handled_at: float | None = None
        self.lag = LagSampler(self.router, self.lag_interval_s)

    @abc.abstractmethod
    async def handle(self, event: RouterEvent) -> None:
        """Do the work for one event. Raising asks the router to retry, then dead-letter it."""

    async def _on_event(self, event: RouterEvent) -> None:
        try:
            await self.handle(event)
        except Exception:
            self._errors += 1
            raise
        self._handled += 1
        self._last_handled_at = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop()`; the router is stopped (acks committed) however run() ends."""
        try:
            await self.router.start()
            self._started_at = time.monotonic()
            async with self.lag.sampling():
                await self._stop.wait()
        finally:
            await self.router.stop()

    async def stop(self) -> None:
        self._stop.set()

    # -- health ---------------------------------------------------------------------------------------

    def health_check(self) -> HealthCheckResult:
        stats = self.router.get_stats()
        details: dict[str, Any] = {"group": self.config.group, "handled": self._handled, "errors": self._errors,
                                   "dead_lettered": stats["dead_lettered"], "running": stats["running"]}
        details["spool_depth"] = stats["spool_depth"]["total"]
        details.update(self.lag.details())
        dead = dead_consumers(self.router)
        if self._started_at is not None and not self._stop.is_set() and (dead or not self.router.is_running):
            return HealthCheckResult.unhealthy(f"router consumers not running: {dead or 'all'}", **details)
        uptime = 0.0 if self._started_at is None else time.monotonic() - self._started_at
        return HealthCheckResult.from_metrics(uptime, self._handled + self._errors, self._errors,
                                              max_error_rate=self.max_error_rate, **details)

    @classmethod
    def factory(cls, config: RouterConfig | None = None, **kwargs: Any) -> Callable[[], ConsumerDaemon]:
        """A DaemonManager factory: a fresh daemon (and router) on every (re)start."""
        return lambda: cls(config, **kwargs)
