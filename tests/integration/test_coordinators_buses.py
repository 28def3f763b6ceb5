"""Coordinators on real Redis and Kafka: the bootstrap end to end, and two nodes reacting to one event.

Every test has its own namespace, so it sees only its own streams, topics, groups and dedup keys.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordination.config import RouterConfig
from coordination.coordination_bootstrap import (
    bootstrap_coordination,
    get_coordinator,
    is_coordination_ready,
    reset_bootstrap_state,
)
from coordination.coordinators import COORDINATOR_CLASSES
from coordination.event_router import UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique, until

pytestmark = pytest.mark.integration


def _config(namespace: str, node_id: str) -> RouterConfig:
    return RouterConfig(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP, namespace=namespace, node_id=node_id,
                        start_position="earliest", redis_options={"block_ms": 100},
                        kafka_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500})


@pytest.fixture
def fresh_bootstrap() -> Iterator[None]:
    reset_bootstrap_state()
    yield
    reset_bootstrap_state()


def _status(name: str, collection: str, key: str) -> str | None:
    coordinator = get_coordinator(name)
    entry = coordinator.view.entry(collection, key) if coordinator else None
    return entry["status"] if entry else None


async def test_bootstrap_on_the_real_buses(kafka_service: str, fresh_bootstrap: None) -> None:
    router = UnifiedEventRouter(_config(unique("boot"), "node-a"))
    await router.start()
    try:
        status = bootstrap_coordination(router=router, require_master_loop=True, pipeline_auto_trigger=True,
                                        training_epochs=30)
        assert status["initialized_count"] == 31 and status["errors"] == [] and is_coordination_ready()
        standby = get_coordinator("standby_coordinator")
        assert standby is not None
        await until(lambda: len(standby.view.keys_with_status("coordinators", "healthy")) == 31, 30,
                    "the 31 announcements")
        await router.publish("TASK_SPAWNED", {"task_id": "j1", "node_id": "gpu-3"}, source="scheduler")
        await until(lambda: _status("job_scheduler", "jobs", "j1") == "running", 30, "job tracked")
        await router.publish("HOST_OFFLINE", {"node_id": "gpu-3"}, source="monitor")
        await router.publish("NPZ_EXPORT_COMPLETE", {"config_key": "hex8_2p", "output_path": "data/h.npz"},
                             source="exporter")
        await until(lambda: _status("health_manager", "nodes", "gpu-3") == "recovering", 30, "recovery")
        await until(lambda: _status("job_scheduler", "jobs", "j1") == "orphaned", 30, "job orphaned")
        training = get_coordinator("training_coordinator")
        assert training is not None
        await until(lambda: training.view.counter("requests") == 1, 30, "training requested by the pipeline")
        request = router.history(event_type="TRAINING_REQUESTED")[0]
        assert request.payload["epochs"] == 30 and request.payload["data_path"] == "data/h.npz"
    finally:
        reset_bootstrap_state()
        await router.stop()


async def test_the_same_reaction_on_two_nodes_is_handled_once(kafka_service: str) -> None:
    namespace = unique("react")
    routers = [UnifiedEventRouter(_config(namespace, node)) for node in ("node-a", "node-b")]
    managers = [COORDINATOR_CLASSES["health_manager"](router) for router in routers]
    for manager in managers:
        manager.wire()
    for router in routers:
        await router.start()
    try:
        await routers[0].publish("HOST_OFFLINE", {"node_id": "gpu-9"}, source="monitor")
        for manager in managers:
            await until(lambda m=manager: (m.view.entry("nodes", "gpu-9") or {}).get("status") == "recovering",  # type: ignore[misc]
                        30, "recovery started on each node")
        assert [m.reactions_published for m in managers] == [2, 2]  # NODE_UNHEALTHY, RECOVERY_INITIATED each
        # Both nodes announced NODE_UNHEALTHY for the same HOST_OFFLINE: one content hash, so each node's
        # group handled it once. (RECOVERY_INITIATED may come twice: each node reacts to the copy it handled.)
        for router in routers:
            await until(lambda r=router: r.get_stats()["content_duplicates_prevented"] >= 1, 30,  # type: ignore[misc]
                        "the other node's copy dropped")
            assert len(router.history(event_type="NODE_UNHEALTHY")) == 1
    finally:
        for manager in managers:
            manager.shutdown()
        for router in routers:
            await router.stop()
