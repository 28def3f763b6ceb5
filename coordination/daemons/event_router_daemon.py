"""The EVENT_ROUTER daemon: the process router's bus readers under the manager's supervision.

    from coordination.daemons import event_router_daemon
    manager.register_factory(DaemonType.EVENT_ROUTER, event_router_daemon.factory(get_router()))

`run()` starts the router (one consumer per bus) and waits for `stop()`, which stops the router:
consumers cancelled, pending acks committed, brokers closed. Health comes from the router's stats:
unhealthy when a bus consumer ended (the manager then restarts the daemon, which starts the router
again), degraded while publishes wait in the spool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from coordination.daemons.base import dead_consumers
from coordination.daemons.lag_sampler import LagSampler
from coordination.event_router import UnifiedEventRouter
from coordination.protocols import HealthCheckResult

__all__ = ["EventRouterDaemon", "factory"]


class EventRouterDaemon:
    def __init__(self, router: UnifiedEventRouter, lag_interval_s: float = 10.0) -> None:
        self.router = router
        self._stop = asyncio.Event()
        self._running = False
        self.lag = LagSampler(router, lag_interval_s)

    async def run(self) -> None:
        try:
            await self.router.start()
            self._running = True
            async with self.lag.sampling():
                await self._stop.wait()
        finally:
            self._running = False
            await self.router.stop()

    async def stop(self) -> None:
        self._stop.set()

    def health_check(self) -> HealthCheckResult:
        stats = self.router.get_stats()
        details = {key: stats[key] for key in ("total_events_routed", "handler_errors", "dead_lettered",
                                               "published", "running")}
        details["spool_depth"] = stats["spool_depth"]["total"]
        details.update(self.lag.details())
        if not self._running:
            return HealthCheckResult.unhealthy("router not started", **details)
        dead = dead_consumers(self.router)
        if dead or not self.router.is_running:
            return HealthCheckResult.unhealthy(f"router consumers ended: {', '.join(dead) or 'all'}", **details)
        if details["spool_depth"]:
            return HealthCheckResult.degraded(f"{details['spool_depth']} publishes wait in the spool", **details)
        return HealthCheckResult.healthy("OK", **details)


def factory(router: UnifiedEventRouter) -> Callable[[], EventRouterDaemon]:
    """The DaemonManager factory of EVENT_ROUTER for `router` (the process's router, usually)."""
    return lambda: EventRouterDaemon(router)
