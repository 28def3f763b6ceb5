"""Readiness from consumer lag on the real brokers: a consumer daemon whose handler is stuck falls behind,
its health reports the lag Redis / Kafka give for its group, and the manager's readiness probe turns
false; once the handler is released and the group catches up, it turns true again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import pytest

from coordination.config import RouterConfig
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig
from coordination.daemons.base import Bus, ConsumerDaemon
from coordination.event_router import UnifiedEventRouter
from schemas.envelope import RouterEvent
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique, until

pytestmark = pytest.mark.integration

class Stuck(ConsumerDaemon):
    daemon_type: ClassVar[str] = "STUCK_CONSUMER"
    subscriptions = ("TRAINING_COMPLETED",)
    lag_interval_s: ClassVar[float] = 0.2
    released: ClassVar[asyncio.Event]  # made by each test: an Event belongs to the loop that used it

    async def handle(self, event: RouterEvent) -> None:
        await self.released.wait()


@pytest.mark.parametrize("bus", ["data", "cross"])
async def test_a_group_behind_is_not_ready_until_it_caught_up(bus: Bus, tmp_path: Path, redis_service: str,
                                                              kafka_service: str) -> None:
    Stuck.released = released = asyncio.Event()
    config = RouterConfig(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP if bus == "cross" else None,
                          namespace=unique("lag"), node_id="n1", start_position="earliest", consume_batch=4)
    Stuck.buses = (bus,)
    manager = DaemonManager(DaemonManagerConfig(), state_path=tmp_path / "state.json", readiness_max_lag=10)
    manager.register_factory(Stuck.daemon_type, Stuck.factory(config), health_check_interval=0.2,
                             auto_restart=False)
    publisher = UnifiedEventRouter(config)
    try:
        assert await manager.start(Stuck.daemon_type)
        await until(lambda: manager.readiness_probe(), 30)  # started, sampled, nothing behind
        routes = {"route_to_data_bus": bus == "data", "route_to_stage_bus": False,
                  "route_to_cross_process": bus == "cross"}
        for n in range(40):
            await publisher.publish("TRAINING_COMPLETED", {"n": n}, **routes)

        def lag() -> int:  # from the daemon's last health result, as the readiness probe reads it
            info = manager.get_daemon_info(Stuck.daemon_type)
            last = info.last_health if info is not None else None
            return int(last.details.get("consumer_lag") or 0) if last is not None else 0

        await until(lambda: lag() >= 30 and not manager.readiness_probe()
                    and any("lags" in reason for reason in manager.not_ready_reasons()), 30,
                    what="the lag reported and readiness false")
        released.set()
        await until(lambda: lag() == 0 and manager.readiness_probe(), 30)
    finally:
        released.set()
        await publisher.stop()
        await manager.shutdown(timeout=5, force=True)
