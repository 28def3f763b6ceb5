"""A node-agent plugin for the spool fault test: SPOOL_TICKER publishes one NEW_GAMES_AVAILABLE on the
cross bus every 0.2 s through the process router (whose spool holds what Kafka does not take) and
appends the id of each publish that returned (acknowledged or spooled) to $SPOOL_TICKER_FILE."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from coordination.daemon_types import DaemonType
from coordination.event_router import get_router


class SpoolTicker:
    def __init__(self) -> None:
        self._stop = asyncio.Event()

    async def run(self) -> None:
        router, n = get_router(), 0
        while not self._stop.is_set():
            event = await router.publish("NEW_GAMES_AVAILABLE", {"n": n}, source="ticker", route_to_data_bus=False,
                                         route_to_stage_bus=False)
            await asyncio.to_thread(_append, event.event_id)
            n += 1
            try:
                await asyncio.wait_for(self._stop.wait(), 0.2)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._stop.set()


def _append(event_id: str) -> None:
    with open(os.environ["SPOOL_TICKER_FILE"], "a") as ids:
        ids.write(event_id + "\n")


def register(manager: Any) -> list[str]:
    manager.register_factory("SPOOL_TICKER", SpoolTicker, depends_on=[DaemonType.EVENT_ROUTER])
    return ["SPOOL_TICKER"]
