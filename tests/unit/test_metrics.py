"""The node's Prometheus families on memory:// buses: router counters per group, handler durations from
the handler observer hook, daemon states, and lag and leadership from the latest heartbeat."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from coordination._deadlines import Deadlines
from coordination.config import RouterConfig
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from coordination.handlers import Subscriber, add_handler_observer, first_attempts, remove_handler_observer
from coordination.metrics import node_registry
from tests.support import unique


class Silent:
    async def publish(self, event_type: str, payload: Any = None, source: str = "", **options: Any) -> None:
        return None


def router_on_memory(node_id: str) -> UnifiedEventRouter:
    name = unique("metrics")
    return UnifiedEventRouter(RouterConfig(
        redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}-k", namespace=unique("ns"), node_id=node_id,
        start_position="earliest", max_attempts=1))


async def test_events_that_flowed_show_as_counters_and_handler_durations(tmp_path: Path) -> None:
    router = router_on_memory("node-x")
    manager = DaemonManager(DaemonManagerConfig(), router=Silent(), state_path=tmp_path / "s.json")
    registry = node_registry(manager, router, heartbeat=lambda: {
        "is_leader": True, "daemons": {"event_router": {"consumers": [
            {"bus": "cross", "topic": "ns.events", "group": "node-x.router", "behind": 7},
            {"bus": "data", "topic": "ns:data", "group": "node-x.router", "behind": None}]}}})
    seen: list[str] = []

    def failing(event: RouterEvent) -> None:
        raise RuntimeError("poison")

    router.subscribe("TRAINING_COMPLETED", lambda e: seen.append(e.event_id))
    router.subscribe("MODEL_PROMOTED", failing)
    await router.start()
    try:
        await router.publish("TRAINING_COMPLETED", {"config_key": "hex8_2p"})
        await router.publish("MODEL_PROMOTED", {"model_path": "m.pth"})
        for _ in range(500):
            if seen and router.get_stats()["dead_lettered"]:
                break
            await asyncio.sleep(0.01)
        text = generate_latest(registry).decode()
    finally:
        await router.stop()
    group = 'group="node-x.router"'
    assert f'ringrift_events_published_total{{bus="cross",{group}}} 2.0' in text  # labels come sorted
    assert f'ringrift_events_consumed_total{{event_type="TRAINING_COMPLETED",{group}}} 1.0' in text
    assert any(f'ringrift_events_consumed_by_bus_total{{bus="{bus}",{group}}}' in text for bus in ("data", "cross"))
    assert f'ringrift_events_deduplicated_total{{{group},kind="id"}}' in text
    assert f"ringrift_events_dead_lettered_total{{{group}}} 1.0" in text
    # per type and bus
    assert f'ringrift_events_total{{bus="cross",event_type="TRAINING_COMPLETED",{group},what="published"}} 1.0' in text
    assert f'ringrift_events_total{{bus="cross",event_type="MODEL_PROMOTED",{group},what="published"}} 1.0' in text
    assert f'ringrift_events_total{{bus="cross",event_type="TRAINING_COMPLETED",{group},what="consumed"}} 1.0' in text \
        or f'ringrift_events_total{{bus="data",event_type="TRAINING_COMPLETED",{group},what="consumed"}} 1.0' in text
    assert f'event_type="MODEL_PROMOTED",{group},what="dead_lettered"}} 1.0' in text
    assert f'ringrift_handler_failures_total{{{group},kind="error"}} 1.0' in text
    failing_name = f"{__name__}.{failing.__qualname__}"
    assert f'ringrift_handler_duration_seconds_count{{event_type="MODEL_PROMOTED",handler="{failing_name}",' \
           'outcome="error"} 1.0' in text
    assert 'ringrift_handler_duration_seconds_bucket{event_type="TRAINING_COMPLETED"' in text
    assert 'ringrift_spool_depth{bus="total"} 0.0' in text
    assert 'ringrift_consumer_lag{bus="cross",daemon="event_router",group="node-x.router",topic="ns.events"} 7.0' \
        in text
    assert 'topic="ns:data"' not in text  # lag unknown: no sample rather than a made-up 0
    assert "ringrift_is_leader 1.0" in text


async def test_without_router_or_heartbeat_only_the_daemon_families_show(tmp_path: Path) -> None:
    manager = DaemonManager(DaemonManagerConfig(), router=Silent(), state_path=tmp_path / "s.json")
    text = generate_latest(node_registry(manager)).decode()
    assert "ringrift_liveness 1.0" in text and "ringrift_readiness 0.0" in text
    assert "ringrift_events_" not in text and "ringrift_is_leader" not in text


async def test_a_failing_observer_does_not_fail_the_handling() -> None:
    calls: list[tuple[str, str, bool]] = []

    def broken(event_type: str, handler: str, duration_s: float, ok: bool) -> None:
        raise RuntimeError("observer bug")

    def recording(event_type: str, handler: str, duration_s: float, ok: bool) -> None:
        assert duration_s >= 0
        calls.append((event_type, handler.rsplit(".", 1)[-1], ok))

    async def handler(event: RouterEvent) -> None:
        return None

    add_handler_observer(broken)
    add_handler_observer(recording)
    try:
        failures = await first_attempts([Subscriber(handler)], RouterEvent.new("MODEL_PROMOTED", {}), Deadlines(5.0))
    finally:
        remove_handler_observer(broken)
        remove_handler_observer(recording)
    assert failures is None and calls == [("MODEL_PROMOTED", "handler", True)]
