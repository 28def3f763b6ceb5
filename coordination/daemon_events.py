"""Lifecycle announcements of the daemon manager, published best effort through the router.

    events = LifecycleEvents(router)          # router=None: coordination.event_router.get_router()
    events.emit("DAEMON_STARTED", {"daemon_name": "auto_sync", "pid": 123})
    await events.drain(timeout=2.0)           # at shutdown: let pending publishes finish

`emit` never blocks and never raises: the publish runs in a background task, and a failing or
slow router is logged (once per failure streak) and otherwise ignored, so the manager's
lifecycle never depends on the buses. Events go to the node's data bus and the cross-process bus
(not the stage bus), with content dedup off: two identical status changes are two facts.
`hostname` and `source` are added to every payload.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["EventPublisher", "LifecycleEvents"]

log = logging.getLogger(__name__)
SOURCE = "daemon_manager"


class EventPublisher(Protocol):
    """What the manager needs of a router: `UnifiedEventRouter.publish`."""

    async def publish(self, event_type: Any, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> Any: ...


class LifecycleEvents:
    def __init__(self, publisher: EventPublisher | None = None, hostname: str | None = None) -> None:
        self._publisher = publisher
        self.hostname = hostname or socket.gethostname()
        self._pending: set[asyncio.Task[None]] = set()
        self._failing = False
        self.published = 0
        self.failed = 0

    def _router(self) -> EventPublisher:
        if self._publisher is None:
            from coordination.event_router import get_router  # lazily: only when an event is sent

            self._publisher = get_router()
        return self._publisher

    def emit(self, event_type: str, payload: Mapping[str, Any]) -> None:
        """Publish in the background; without a running event loop the event is dropped (logged)."""
        body = {**payload, "hostname": self.hostname, "source": SOURCE}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.debug("no running event loop: %s %s not published", event_type, body)
            return
        task = loop.create_task(self._publish(event_type, body), name=f"lifecycle-{event_type}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, event_type: str, payload: dict[str, Any]) -> None:
        try:
            await self._router().publish(event_type, payload, source=SOURCE, route_to_data_bus=True,
                                         route_to_stage_bus=False, route_to_cross_process=True, dedup=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            if not self._failing:
                log.warning("could not publish %s (%s: %s); lifecycle events are best effort",
                            event_type, type(exc).__name__, exc)
            self._failing = True
        else:
            self.published += 1
            self._failing = False

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait up to `timeout` for pending publishes, then cancel the rest."""
        pending = set(self._pending)
        if not pending:
            return
        _, stuck = await asyncio.wait(pending, timeout=timeout)
        for task in stuck:
            task.cancel()
