"""Lifecycle events reach a real router (memory:// buses) on the data and cross-process buses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coordination.config import RouterConfig
from coordination.daemon_clock import ManualClock
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from schemas.payloads import validate_payload
from tests.support import unique, until


@pytest.fixture
async def router() -> AsyncIterator[UnifiedEventRouter]:
    name = unique("mem")
    r = UnifiedEventRouter(RouterConfig.from_env(environ={
        "RINGRIFT_REDIS_URL": f"memory://{name}", "RINGRIFT_KAFKA_BOOTSTRAP": f"memory://{name}",
        "RINGRIFT_NAMESPACE": unique("ns"), "RINGRIFT_NODE_ID": "node-a", "RINGRIFT_ROUTER_START": "earliest"}))
    await r.start()
    yield r
    await r.stop()




async def test_lifecycle_events_reach_router_subscribers(router: UnifiedEventRouter, tmp_path: Path) -> None:
    seen: list[RouterEvent] = []
    router.subscribe(None, seen.append)
    clock = ManualClock()
    manager = DaemonManager(DaemonManagerConfig(recovery_cooldown=0.0), router=router, clock=clock,
                            state_path=tmp_path / "s.json")
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError(f"boom {runs}")

    manager.register_factory("FLAKY", flaky, max_restarts=3)
    await manager.start("FLAKY")
    for step in (0.0, 6.0, 11.0, 22.0):  # back-off 5, 10, 20 s (+-10 %)
        await clock.advance(step)
        await asyncio.sleep(0.02)  # let the background publishes reach the buses
    assert manager.is_permanently_failed("FLAKY") and runs == 4
    await manager.shutdown(timeout=1)
    wanted = {"DAEMON_STARTED", "DAEMON_STATUS_CHANGED", "DAEMON_CRASH_LOOP_DETECTED", "DAEMON_PERMANENTLY_FAILED"}
    await until(lambda: wanted <= {e.event_type for e in seen})
    started = next(e for e in seen if e.event_type == "DAEMON_STARTED")
    assert started.payload["daemon_name"] == "flaky" and started.source == "daemon_manager"
    for event in seen:
        validate_payload(event.event_type, dict(event.payload))
    changes = [(e.payload["old_status"], e.payload["new_status"]) for e in seen
               if e.event_type == "DAEMON_STATUS_CHANGED"]
    assert changes[:3] == [("stopped", "running"), ("running", "restarting"), ("restarting", "running")]
    assert changes[-1] == ("running", "failed")
    published = router.get_stats()["published"]
    assert "stage" not in published and published["data"] == published["cross"] == len(
        [e for e in seen if e.payload.get("daemon_name") == "flaky"])


async def test_stop_announces_daemon_stopped(router: UnifiedEventRouter, tmp_path: Path) -> None:
    seen: list[RouterEvent] = []
    router.subscribe("DAEMON_STOPPED", seen.append)
    manager = DaemonManager(DaemonManagerConfig(), router=router, state_path=tmp_path / "s.json")

    async def forever() -> None:
        await asyncio.Event().wait()

    manager.register_factory("CALM", forever)
    await manager.start("CALM")
    await manager.stop("CALM")
    await until(lambda: len(seen) == 1)
    assert seen[0].payload["daemon_name"] == "calm" and seen[0].payload["reason"] == "stopped"
