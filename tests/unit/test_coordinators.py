"""The coordinators: each one's events change its view (and its reactions publish what they should),
the generic base's failure handling, and one chain through a real router on in-process buses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from brokers.errors import BrokerUnavailable
from coordination.config import RouterConfig
from coordination.contracts import CoordinatorStatus
from coordination.coordinator_catalog import COORDINATOR_INIT_ORDER
from coordination.coordinators import COORDINATOR_CLASSES, Coordinator, Count, MalformedEvent, On, Track
from coordination.coordinators.rules import CONFIG, StateView, payload_key
from coordination.event_router import UnifiedEventRouter
from schemas.envelope import RouterEvent
from schemas.events import is_known_event_type
from tests.support import unique, until


class RecordingRouter:
    """The part of the router a coordinator uses; publishes are recorded (or fail, when told to)."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}
        self.published: list[tuple[str, dict[str, Any]]] = []  # without cause_event_id, kept in `causes`
        self.causes: list[str] = []
        self.fail_publishes = 0

    def subscribe(self, event_type: str, handler: Any) -> None:
        if handler not in self.handlers.setdefault(event_type, []):
            self.handlers[event_type].append(handler)

    def unsubscribe(self, event_type: str, handler: Any) -> bool:
        if handler in self.handlers.get(event_type, []):
            self.handlers[event_type].remove(handler)
            return True
        return False

    async def publish(self, event_type: str, payload: dict[str, Any] | None = None, source: str = "") -> None:
        if self.fail_publishes:
            self.fail_publishes -= 1
            raise BrokerUnavailable("the data bus is unavailable")
        body = dict(payload or {})
        self.causes.append(body.pop("cause_event_id"))
        self.published.append((event_type, body))


def make(name: str, **settings: Any) -> tuple[Coordinator, RecordingRouter]:
    router = RecordingRouter()
    coordinator = COORDINATOR_CLASSES[name](router, **settings)  # type: ignore[arg-type]
    coordinator.wire()
    return coordinator, router


async def feed(coordinator: Coordinator, event_type: str, **payload: Any) -> list[tuple[str, dict[str, Any]]]:
    """Deliver one event as the router would; return what the coordinator published for it."""
    router: RecordingRouter = coordinator.router  # type: ignore[assignment]
    before = len(router.published)
    assert event_type in router.handlers, f"{coordinator.name} is not subscribed to {event_type}"
    for handler in router.handlers[event_type]:
        await handler(RouterEvent.new(event_type, payload, "test"))
    return router.published[before:]


def status_of(coordinator: Coordinator, collection: str, key: str) -> str | None:
    entry = coordinator.view.entry(collection, key)
    return entry["status"] if entry else None


# -- the catalog of coordinators ---------------------------------------------------------------------


def test_there_is_one_coordinator_class_per_coordinator_of_the_init_order() -> None:
    assert set(COORDINATOR_CLASSES) == set(COORDINATOR_INIT_ORDER)
    assert len(COORDINATOR_CLASSES) == 31


@pytest.mark.parametrize("name", COORDINATOR_INIT_ORDER)
def test_every_coordinator_subscribes_to_catalog_event_types(name: str) -> None:
    coordinator, router = make(name)
    assert coordinator.subscribed and coordinator.event_types
    assert all(is_known_event_type(t) for t in coordinator.event_types)
    assert set(router.handlers) == set(coordinator.event_types)
    json.dumps(coordinator.get_status())  # plain data
    assert coordinator.health_check().status is CoordinatorStatus.RUNNING


def test_a_table_row_with_an_unknown_event_type_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="'TASK_SPAWN' is not a catalog event type NAME"):
        On("TASK_SPAWN", Count("x"))
    with pytest.raises(ValueError, match="not a catalog event type NAME"):
        On("task_spawned", Count("x"))  # a spelling, not the NAME


# -- layers 1 and 2 -----------------------------------------------------------------------------------


async def test_task_coordinator_tracks_tasks() -> None:
    c, _ = make("task_coordinator")
    await feed(c, "TASK_SPAWNED", task_id="t1", node_id="gpu-1", task_type="selfplay")
    assert status_of(c, "tasks", "t1") == "running"
    await feed(c, "TASK_COMPLETED", task_id="t1")
    entry = c.view.entry("tasks", "t1")
    assert entry is not None and entry["status"] == "completed" and entry["node_id"] == "gpu-1"
    assert c.view.counter("spawned") == 1 and c.view.counter("completed") == 1


async def test_global_task_coordinator_tracks_the_work_queue() -> None:
    c, _ = make("global_task_coordinator")
    await feed(c, "WORK_QUEUED", work_id="w1", work_type="selfplay")
    await feed(c, "WORK_STARTED", work_id="w1")
    assert status_of(c, "work", "w1") == "running"
    await feed(c, "WORK_QUEUE_STALLED", reason="no workers")
    assert c.view.flag("queue_stalled")
    health = c.health_check()
    assert health.healthy and health.status is CoordinatorStatus.DEGRADED and "queue_stalled" in health.message
    await feed(c, "WORK_QUEUE_RECOVERED")
    assert c.health_check().status is CoordinatorStatus.RUNNING


async def test_resource_coordinator_tracks_load_and_backpressure() -> None:
    c, _ = make("resource_coordinator")
    await feed(c, "NODE_OVERLOADED", node_id="gpu-2", cpu_percent=98)
    await feed(c, "BACKPRESSURE_ACTIVATED", reason="queue depth")
    assert status_of(c, "nodes", "gpu-2") == "overloaded" and c.view.flag("backpressure")
    assert c.health_check().message == "1 nodes overloaded; backpressure raised"
    await feed(c, "CLUSTER_CAPACITY_CHANGED", total_gpus=16)
    assert (c.view.latest("cluster_capacity") or {})["total_gpus"] == 16


async def test_cache_orchestrator_invalidates_caches_when_a_new_model_is_promoted() -> None:
    c, _ = make("cache_orchestrator")
    sent = await feed(c, "MODEL_PROMOTED", config_key="hex8_2p", model_path="models/a.pth")
    assert sent == [("CACHE_INVALIDATED", {"cache_key": "model:hex8_2p", "config_key": "hex8_2p",
                                           "model_path": "models/a.pth", "reason": "model_promoted"})]
    assert await feed(c, "MODEL_PROMOTED", config_key="hex8_2p", model_path="models/a.pth") == []
    await feed(c, "CACHE_INVALIDATED", cache_key="model:hex8_2p")
    assert status_of(c, "invalidations", "model:hex8_2p") == "invalidated"


async def test_health_manager_announces_unhealthy_nodes_and_starts_their_recovery() -> None:
    c, _ = make("health_manager")
    sent = await feed(c, "HOST_OFFLINE", host="gpu-3", reason="no heartbeat")
    assert status_of(c, "nodes", "gpu-3") == "offline"
    assert sent == [("NODE_UNHEALTHY", {"node_id": "gpu-3", "reason": "host_offline"})]
    assert await feed(c, "HOST_OFFLINE", host="gpu-3") == []  # no news, no announcement
    sent = await feed(c, "NODE_UNHEALTHY", node_id="gpu-3", reason="host_offline")
    assert sent == [("RECOVERY_INITIATED", {"node_id": "gpu-3", "reason": "node_unhealthy"})]
    await feed(c, "RECOVERY_INITIATED", node_id="gpu-3")
    assert status_of(c, "nodes", "gpu-3") == "recovering"
    await feed(c, "NODE_RECOVERED", node_id="gpu-3")
    assert status_of(c, "nodes", "gpu-3") == "healthy" and c.health_check().status is CoordinatorStatus.RUNNING


async def test_health_manager_parts_and_recovery_setting() -> None:
    c, _ = make("health_manager", recovery=False)
    await feed(c, "HOST_OFFLINE", node_id="n1")
    assert await feed(c, "NODE_UNHEALTHY", node_id="n1") == []  # tracked, no recovery started
    assert status_of(c, "nodes", "n1") == "unhealthy"
    assert c.health_check().message == "1 nodes unhealthy"
    errors_only, router = make("health_manager", parts=["errors"])
    assert "HOST_OFFLINE" not in router.handlers and "DAEMON_CRASH_LOOP_DETECTED" in router.handlers
    await feed(errors_only, "DAEMON_CRASH_LOOP_DETECTED", daemon_name="auto_sync", hostname="gpu-1")
    assert status_of(errors_only, "daemons", "auto_sync@gpu-1") == "crash_loop"
    await feed(errors_only, "ERROR", message="disk full")
    assert errors_only.view.counter("errors") == 1
    with pytest.raises(ValueError, match="health_manager has no part"):
        make("health_manager", parts=["nodes"])


async def test_memory_pressure_controller_applies_backpressure_only_while_critical() -> None:
    c, _ = make("memory_pressure_controller")
    assert await feed(c, "MEMORY_PRESSURE_CAUTION", node_id="n1") == []
    sent = await feed(c, "MEMORY_PRESSURE_CRITICAL", node_id="n1", used_percent=95)
    assert sent == [("BACKPRESSURE_ACTIVATED", {"node_id": "n1", "reason": "memory_pressure", "level": "critical"})]
    assert await feed(c, "MEMORY_PRESSURE_EMERGENCY", node_id="n1") == []  # still paused
    sent = await feed(c, "MEMORY_PRESSURE_RECOVERED", node_id="n1")
    assert sent == [("BACKPRESSURE_RELEASED", {"node_id": "n1", "reason": "memory_pressure", "level": "normal"})]


async def test_standby_coordinator_tracks_the_clusters_coordinators() -> None:
    c, _ = make("standby_coordinator")
    await feed(c, "COORDINATOR_HEALTHY", coordinator_id="task_coordinator@n1", coordinator_name="task_coordinator")
    await feed(c, "COORDINATOR_INIT_FAILED", coordinator_id="model_coordinator@n1", error="boom")
    assert status_of(c, "coordinators", "task_coordinator@n1") == "healthy"
    assert c.health_check().message == "1 coordinators init_failed"
    await feed(c, "COORDINATOR_FAILOVER", from_node="n1", to_node="n2")
    assert c.view.counter("failovers") == 1


async def test_cluster_resilience_orchestrator_escalates_a_lost_quorum_once() -> None:
    c, _ = make("cluster_resilience_orchestrator")
    sent = await feed(c, "QUORUM_LOST", voters_alive=1)
    assert [t for t, _ in sent] == ["RESILIENCE_ESCALATION"] and sent[0][1]["condition"] == "quorum_lost"
    assert await feed(c, "QUORUM_LOST", voters_alive=1) == []
    assert c.view.flag("quorum_lost") and c.health_check().message == "quorum_lost raised"
    await feed(c, "QUORUM_RESTORED")
    assert not c.view.flag("quorum_lost")


async def test_model_coordinator_knows_each_configs_promoted_model() -> None:
    c, _ = make("model_coordinator")
    await feed(c, "TRAINING_COMPLETED", config_key="hex8_2p", model_id="m7", model_path="models/m7.pth")
    await feed(c, "MODEL_PROMOTED", config_key="hex8_2p", model_id="m7", model_path="models/m7.pth", elo=1620)
    promoted = c.view.entry("configs", "hex8_2p")
    assert promoted is not None and promoted["model_path"] == "models/m7.pth" and promoted["elo"] == 1620
    assert status_of(c, "models", "m7") == "promoted"
    await feed(c, "TRAINING_COMPLETED", config_key="hex8_2p")  # no model named: nothing to track, no error
    assert c.errors_count == 0


# -- layers 3 and 4 -----------------------------------------------------------------------------------


async def test_sync_coordinator_tracks_syncs_and_triggers_one_for_stale_data() -> None:
    c, _ = make("sync_coordinator")
    await feed(c, "DATA_SYNC_STARTED", host="gpu-4")
    assert status_of(c, "syncs", "gpu-4") == "running"
    await feed(c, "DATA_SYNC_COMPLETED", host="gpu-4", games_synced=150, bytes_transferred=2048)
    assert status_of(c, "syncs", "gpu-4") == "completed" and c.view.counter("games_synced") == 150
    sent = await feed(c, "DATA_STALE", config_key="sq8_4p", age_seconds=7200)
    assert sent == [("SYNC_TRIGGERED", {"config_key": "sq8_4p", "reason": "data_stale"})]
    assert await feed(c, "DATA_STALE", config_key="sq8_4p") == []


async def test_training_coordinator_allows_one_run_per_config() -> None:
    c, _ = make("training_coordinator")
    assert await feed(c, "TRAINING_REQUESTED", config_key="hex8_2p") == []
    await feed(c, "TRAINING_STARTED", config_key="hex8_2p", job_id="j1")
    assert status_of(c, "runs", "hex8_2p") == "running"
    sent = await feed(c, "TRAINING_REQUESTED", board_type="hex8", num_players=2)
    assert sent[0][0] == "TRAINING_SLOT_UNAVAILABLE" and sent[0][1]["config_key"] == "hex8_2p"
    await feed(c, "TRAINING_COMPLETED", config_key="hex8_2p", epochs=50)
    assert status_of(c, "runs", "hex8_2p") == "completed"
    assert await feed(c, "TRAINING_REQUESTED", config_key="hex8_2p") == []


async def test_transfer_verifier_requests_a_new_transfer_of_bad_data() -> None:
    c, _ = make("transfer_verifier")
    await feed(c, "DATA_SYNC_COMPLETED", host="gpu-5", games_synced=10)
    assert status_of(c, "transfers", "gpu-5") == "received"
    sent = await feed(c, "SYNC_CHECKSUM_FAILED", host="gpu-5", file="games.db")
    assert sent == [("SYNC_REQUEST", {"host": "gpu-5", "reason": "sync_checksum_failed", "priority": "high"})]
    await feed(c, "REPAIR_COMPLETED", host="gpu-5")
    assert status_of(c, "transfers", "gpu-5") == "repaired"


async def test_ephemeral_guard_syncs_new_games_and_alerts_when_they_are_lost() -> None:
    c, _ = make("ephemeral_guard")
    sent = await feed(c, "NEW_GAMES_AVAILABLE", host="spot-1", config_key="hex8_2p", new_games=120)
    assert sent == [("SYNC_REQUEST", {"host": "spot-1", "reason": "new_games_available", "priority": "high"})]
    assert await feed(c, "NEW_GAMES_AVAILABLE", host="spot-1", new_games=30) == []
    sent = await feed(c, "NODE_TERMINATED", host="spot-1")
    assert sent[0][0] == "HEALTH_ALERT" and sent[0][1]["alert_type"] == "ephemeral_data_lost"
    await feed(c, "NEW_GAMES_AVAILABLE", host="spot-2", new_games=5)
    await feed(c, "DATA_SYNC_COMPLETED", host="spot-2")
    assert await feed(c, "NODE_TERMINATED", host="spot-2") == []  # its games were synced
    assert c.view.counter("games_at_risk") == 155


async def test_queue_populator_refills_an_exhausted_queue() -> None:
    c, _ = make("queue_populator")
    await feed(c, "SELFPLAY_TARGET_UPDATED", config_key="hex8_2p", target_games=500)
    sent = await feed(c, "WORK_QUEUE_EXHAUSTED")
    assert len(sent) == 1 and sent[0][0] == "WORK_QUEUED"
    assert {k: sent[0][1][k] for k in ("work_type", "config_key", "target_games")} == \
        {"work_type": "selfplay", "config_key": "hex8_2p", "target_games": 500}
    await feed(c, "WORK_QUEUED", **sent[0][1])
    assert not c.view.flag("queue_exhausted")
    await feed(c, "WORK_QUEUE_BACKPRESSURE")
    assert await feed(c, "WORK_QUEUE_EXHAUSTED") == []  # not while the queue is under backpressure


# -- layers 5 and 6 -----------------------------------------------------------------------------------


async def test_selfplay_orchestrator_announces_the_games_of_a_batch() -> None:
    c, _ = make("selfplay_orchestrator")
    sent = await feed(c, "SELFPLAY_COMPLETE", task_id="sp1", config_key="hex8_2p", node_id="gpu-6",
                      games_generated=40, db_path="data/hex8.db")
    assert sent == [("NEW_GAMES_AVAILABLE", {"config_key": "hex8_2p", "new_games": 40, "source_batch": "sp1",
                                             "host": "gpu-6", "db_path": "data/hex8.db"})]
    assert status_of(c, "batches", "sp1") == "completed" and c.view.counter("games") == 40
    assert await feed(c, "SELFPLAY_COMPLETE", task_id="sp2", config_key="hex8_2p", games_played=0) == []


async def test_selfplay_scheduler_turns_curriculum_weights_into_an_allocation() -> None:
    c, _ = make("selfplay_scheduler")
    await feed(c, "BACKPRESSURE_ACTIVATED")
    sent = await feed(c, "CURRICULUM_REBALANCED", weights={"hex8_2p": 1.0, "sq8_4p": 3.0})
    assert sent == [("SELFPLAY_ALLOCATION_UPDATED", {"allocation": {"hex8_2p": 0.25, "sq8_4p": 0.75},
                                                     "reason": "curriculum_rebalanced", "throttled": True})]
    assert await feed(c, "CURRICULUM_REBALANCED", weights={"hex8_2p": "lots"}) == []
    assert c.errors_count == 1 and "weights must be numbers" in (c.last_error or "")


async def test_multi_provider_tracks_provisioned_nodes_and_the_budget() -> None:
    c, _ = make("multi_provider")
    await feed(c, "NODE_PROVISIONED", node_id="lambda-1", provider="lambda")
    await feed(c, "NODE_ACTIVATED", node_id="lambda-1")
    await feed(c, "NODE_PROVISION_FAILED", provider="vast", error="no capacity")  # no node to name
    assert status_of(c, "nodes", "lambda-1") == "active" and c.view.counter("provision_failures") == 1
    await feed(c, "BUDGET_EXCEEDED", spent=1200, budget=1000)
    assert c.view.flag("budget_exceeded") and c.errors_count == 0


async def test_job_scheduler_orphans_the_jobs_of_a_dead_host() -> None:
    c, _ = make("job_scheduler")
    await feed(c, "TASK_SPAWNED", task_id="j1", node_id="gpu-7", task_type="training")
    await feed(c, "TASK_SPAWNED", task_id="j2", node_id="gpu-8")
    await feed(c, "TASK_SPAWNED", task_id="j3", node_id="gpu-7")
    await feed(c, "TASK_COMPLETED", task_id="j3")
    sent = await feed(c, "HOST_OFFLINE", node_id="gpu-7")
    assert sent == [("TASK_ORPHANED", {"task_id": "j1", "node_id": "gpu-7", "reason": "host_offline",
                                       "task_type": "training"})]
    assert await feed(c, "P2P_NODE_DEAD", node_id="gpu-7") == []  # already down


# -- layer 7 ----------------------------------------------------------------------------------------------


async def test_auto_export_tracks_exports_per_config() -> None:
    c, _ = make("auto_export_daemon")
    await feed(c, "NEW_GAMES_AVAILABLE", config="hex8_2p", new_games=200)
    assert status_of(c, "configs", "hex8_2p") == "games_pending"
    await feed(c, "NPZ_EXPORT_COMPLETE", config_key="hex8_2p", samples_exported=12000)
    assert status_of(c, "configs", "hex8_2p") == "exported" and c.view.counter("samples_exported") == 12000
    await feed(c, "EXPORT_VALIDATION_FAILED", config_key="sq8_2p")
    assert c.health_check().message == "1 configs export_failed"


async def test_evaluation_coordinator_requests_each_new_models_evaluation_once() -> None:
    c, _ = make("evaluation_daemon")
    sent = await feed(c, "TRAINING_COMPLETED", config_key="hex8_2p", model_id="m9", model_path="models/m9.pth")
    assert sent == [("EVALUATION_REQUESTED", {"model_id": "m9", "model_path": "models/m9.pth",
                                              "config_key": "hex8_2p", "reason": "training_completed"})]
    await feed(c, "EVALUATION_REQUESTED", **sent[0][1])
    assert await feed(c, "TRAINING_COMPLETED", model_id="m9") == []
    assert await feed(c, "TRAINING_COMPLETED", model_id="m10", success=False) == []
    await feed(c, "EVALUATION_COMPLETED", model_id="m9", elo=1610)
    assert status_of(c, "evaluations", "m9") == "completed"


async def test_model_distribution_alerts_on_a_failed_distribution() -> None:
    c, _ = make("model_distribution_daemon")
    await feed(c, "MODEL_PROMOTED", model_path="models/m9.pth", config_key="hex8_2p")
    assert status_of(c, "distributions", "models/m9.pth") == "pending"
    sent = await feed(c, "MODEL_DISTRIBUTION_FAILED", model_path="models/m9.pth", error="timeout",
                      failed_nodes=["gpu-9"])
    assert sent == [("HEALTH_ALERT", {"alert_type": "model_distribution_failed", "severity": "warning",
                                      "model_path": "models/m9.pth", "error": "timeout", "failed_nodes": ["gpu-9"]})]
    await feed(c, "MODEL_DISTRIBUTION_COMPLETE", model_path="models/m9.pth")
    assert c.health_check().status is CoordinatorStatus.RUNNING


async def test_idle_resource_tracks_idle_nodes() -> None:
    c, _ = make("idle_resource_daemon")
    await feed(c, "IDLE_RESOURCE_DETECTED", node_id="gpu-10", gpu_utilization=0.02)
    assert status_of(c, "nodes", "gpu-10") == "idle"
    await feed(c, "TASK_SPAWNED", task_id="x", node_id="gpu-10")
    assert status_of(c, "nodes", "gpu-10") == "busy"
    await feed(c, "CLUSTER_UNDERUTILIZED", utilization=0.1)
    assert c.view.flag("underutilized")


async def test_quality_monitor_blocks_training_on_bad_data() -> None:
    c, _ = make("quality_monitor_daemon")
    await feed(c, "QUALITY_SCORE_UPDATED", config_key="hex8_2p", quality_score=0.9)
    sent = await feed(c, "LOW_QUALITY_DATA_WARNING", config_key="hex8_2p", quality_score=0.3)
    assert sent == [("TRAINING_BLOCKED_BY_QUALITY", {"config_key": "hex8_2p",
                                                     "reason": "low_quality_data_warning"})]
    assert await feed(c, "QUALITY_DEGRADED", config_key="hex8_2p") == []  # blocked already
    await feed(c, "HIGH_QUALITY_DATA_AVAILABLE", config_key="hex8_2p")
    assert status_of(c, "configs", "hex8_2p") == "high_quality"


async def test_orphan_detection_asks_for_a_recovery_sync() -> None:
    c, _ = make("orphan_detection_daemon")
    await feed(c, "DATABASE_CREATED", db_path="data/selfplay_7.db")
    sent = await feed(c, "ORPHAN_GAMES_DETECTED", db_path="data/selfplay_7.db", orphan_count=300)
    assert sent == [("SYNC_REQUEST", {"db_path": "data/selfplay_7.db", "reason": "orphan_games_detected",
                                      "priority": "high"})]
    await feed(c, "ORPHAN_GAMES_REGISTERED", db_path="data/selfplay_7.db")
    assert status_of(c, "databases", "data/selfplay_7.db") == "registered" and c.view.counter("orphan_games") == 300


async def test_training_activity_knows_where_training_runs() -> None:
    c, _ = make("training_activity")
    await feed(c, "TRAINING_STARTED", node_id="gpu-11", config_key="hex8_2p")
    await feed(c, "TRAINING_STARTED", config_key="sq8_2p")  # no node named: keyed by config
    assert c.view.keys_with_status("activity", "training") == ["gpu-11", "sq8_2p"]
    await feed(c, "TRAINING_FAILED", node_id="gpu-11", error="OOM")
    assert status_of(c, "activity", "gpu-11") == "idle"


async def test_pipeline_orchestrator_follows_stages_and_requests_training_with_auto_trigger() -> None:
    passive, _ = make("pipeline_orchestrator")
    assert await feed(passive, "NPZ_EXPORT_COMPLETE", config_key="hex8_2p", output_path="data/h.npz") == []
    assert status_of(passive, "configs", "hex8_2p") == "exported"
    c, _ = make("pipeline_orchestrator", auto_trigger=True, training_epochs=50, use_best_data=True)
    sent = await feed(c, "NPZ_EXPORT_COMPLETE", config_key="hex8_2p", output_path="data/h.npz")
    assert sent == [("TRAINING_REQUESTED", {"config_key": "hex8_2p", "reason": "npz_export_complete",
                                            "data_path": "data/h.npz", "epochs": 50, "use_best_data": True})]
    await feed(c, "TRAINING_STARTED", config_key="hex8_2p")
    assert await feed(c, "NPZ_COMBINATION_COMPLETE", config_key="hex8_2p") == []  # training already
    await feed(c, "MODEL_PROMOTED", config_key="hex8_2p", model_path="models/x.pth")
    assert c.view.counter("iterations") == 1
    with pytest.raises(TypeError, match="pipeline_orchestrator has no setting"):
        make("pipeline_orchestrator", training_epoch=5)


async def test_curriculum_integration_rebalances_when_a_config_plateaus() -> None:
    c, _ = make("curriculum_integration")
    await feed(c, "ELO_UPDATED", config_key="hex8_2p", elo=1500)
    await feed(c, "ELO_UPDATED", config_key="sq8_2p", elo=1400)
    sent = await feed(c, "PLATEAU_DETECTED", config_key="hex8_2p")
    assert sent == [("CURRICULUM_REBALANCED", {"weights": {"hex8_2p": 0.6, "sq8_2p": 0.4},
                                               "reason": "plateau_detected", "trigger_config": "hex8_2p"})]
    await feed(c, "CURRICULUM_REBALANCED", **sent[0][1])
    assert (c.view.latest("weights") or {})["weights"] == {"hex8_2p": 0.6, "sq8_2p": 0.4}


# -- layer 8 ----------------------------------------------------------------------------------------------


async def test_metrics_orchestrator_detects_an_elo_regression() -> None:
    c, _ = make("metrics_orchestrator")
    assert await feed(c, "ELO_UPDATED", config_key="hex8_2p", elo=1500) == []
    assert await feed(c, "ELO_UPDATED", config_key="hex8_2p", elo=1490) == []  # within 30
    sent = await feed(c, "ELO_UPDATED", config_key="hex8_2p", elo=1420)
    assert sent == [("REGRESSION_DETECTED", {"config_key": "hex8_2p", "elo_before": 1490.0, "elo_after": 1420.0,
                                             "elo_drop": 70.0, "severity": "moderate"})]
    await feed(c, "REGRESSION_DETECTED", **sent[0][1])
    assert c.health_check().message == "1 regressions detected"


async def test_optimization_coordinator_starts_cmaes_on_a_plateau() -> None:
    c, _ = make("optimization_coordinator")
    sent = await feed(c, "PLATEAU_DETECTED", config_key="hex8_2p")
    assert sent == [("CMAES_TRIGGERED", {"config_key": "hex8_2p", "reason": "plateau_detected"})]
    await feed(c, "CMAES_TRIGGERED", **sent[0][1])
    assert await feed(c, "PLATEAU_DETECTED", config_key="hex8_2p") == []  # one is running
    await feed(c, "CMAES_COMPLETED", config_key="hex8_2p")
    assert status_of(c, "configs", "hex8_2p") == "optimized"


async def test_per_orchestrator_knows_stale_replay_buffers() -> None:
    c, _ = make("per_orchestrator")
    await feed(c, "PER_BUFFER_REBUILT", config_key="hex8_2p", buffer_size=100000)
    await feed(c, "NPZ_EXPORT_COMPLETE", config_key="hex8_2p")
    assert status_of(c, "buffers", "hex8_2p") == "stale"
    await feed(c, "PER_BUFFER_REBUILT", config_key="hex8_2p")
    assert status_of(c, "buffers", "hex8_2p") == "fresh" and c.view.counter("rebuilds") == 2


async def test_leadership_coordinator_knows_the_leader() -> None:
    c, _ = make("leadership_coordinator")
    await feed(c, "LEADER_ELECTED", node_id="n1", member_id="n1-1")
    assert (c.view.latest("leader") or {})["node_id"] == "n1" and c.health_check().status is CoordinatorStatus.RUNNING
    await feed(c, "LEADER_LOST", node_id="n1")
    assert c.view.flag("leaderless") and c.health_check().message == "leaderless raised"


# -- the generic base ----------------------------------------------------------------------------------


async def test_a_malformed_event_is_counted_as_an_error_not_raised() -> None:
    c, _ = make("task_coordinator")
    await feed(c, "TASK_SPAWNED", node_id="gpu-1")
    assert c.view.entries("tasks") == {} and c.errors_count == 1
    assert c.last_error is not None and "TASK_SPAWNED event" in c.last_error
    assert c.last_error.endswith("names no task_id or job_id or work_id") and "\n" not in c.last_error
    health = c.health_check()
    assert not health.healthy and health.status is CoordinatorStatus.ERROR  # 1 error in 1 event
    for i in range(19):
        await feed(c, "TASK_SPAWNED", task_id=f"t{i}")
    assert c.health_check().healthy  # 5 % errors


async def test_a_count_of_a_non_number_is_malformed() -> None:
    c, _ = make("sync_coordinator")
    await feed(c, "DATA_SYNC_COMPLETED", host="h", games_synced="lots")
    assert "games_synced='lots' is not a number" in (c.last_error or "")


async def test_reactions_are_off_without_integrations() -> None:
    c, _ = make("health_manager", react=False)
    assert await feed(c, "HOST_OFFLINE", node_id="n1") == [] and status_of(c, "nodes", "n1") == "offline"
    assert c.get_status()["reacting"] is False


async def test_a_failed_follow_up_is_retried_without_updating_the_view_twice() -> None:
    c, router = make("job_scheduler")
    await feed(c, "TASK_SPAWNED", task_id="j1", node_id="n1")
    await feed(c, "TASK_SPAWNED", task_id="j2", node_id="n1")
    router.fail_publishes = 1
    event = RouterEvent.new("HOST_OFFLINE", {"node_id": "n1"}, "test")
    with pytest.raises(BrokerUnavailable):
        await c.handle(event)  # the router retries the handler with the same event
    await c.handle(event)
    assert [p["task_id"] for _, p in router.published] == ["j1", "j2"]
    assert c.events_processed == 3 and c.reactions_published == 2


async def test_a_follow_up_names_its_cause() -> None:
    c, router = make("optimization_coordinator")
    event = RouterEvent.new("PLATEAU_DETECTED", {"config_key": "hex8_2p"}, "test")
    await c.handle(event)
    assert router.causes == [event.event_id]


def test_wire_is_idempotent_and_shutdown_unsubscribes() -> None:
    c, router = make("leadership_coordinator")
    c.wire()
    assert all(len(handlers) == 1 for handlers in router.handlers.values())
    c.shutdown()
    assert not c.subscribed and all(not handlers for handlers in router.handlers.values())
    health = c.health_check()
    assert not health.healthy and health.status is CoordinatorStatus.STOPPED


def test_wiring_is_all_or_nothing() -> None:
    class Refusing(RecordingRouter):
        def subscribe(self, event_type: str, handler: Any) -> None:
            if event_type == "LEADER_LOST":
                raise ValueError("unknown event type")
            super().subscribe(event_type, handler)

    router = Refusing()
    c = COORDINATOR_CLASSES["leadership_coordinator"](router)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event type"):
        c.wire()
    assert not c.subscribed and all(not handlers for handlers in router.handlers.values())


async def test_collections_keep_the_most_recently_updated_entries() -> None:
    class SmallTasks(Coordinator):
        name = "small"
        table = (On("TASK_SPAWNED", Track("tasks", ("task_id",), "running")),)
        max_entries = 2

    c = SmallTasks(RecordingRouter())  # type: ignore[arg-type]
    c.wire()
    for task in ("a", "b", "c"):
        await feed(c, "TASK_SPAWNED", task_id=task)
    await feed(c, "TASK_SPAWNED", task_id="b")
    await feed(c, "TASK_SPAWNED", task_id="d")
    assert list(c.view.entries("tasks")) == ["b", "d"]


def test_payload_keys() -> None:
    event = RouterEvent.new("TRAINING_STARTED", {"board_type": "hex8", "num_players": 2}, "t")
    assert payload_key(event, CONFIG) == "hex8_2p"
    event = RouterEvent.new("DAEMON_STARTED", {"daemon_name": "auto_sync", "hostname": "n1"}, "t")
    assert payload_key(event, ("daemon_name@hostname", "daemon_name")) == "auto_sync@n1"
    event = RouterEvent.new("DAEMON_STARTED", {"daemon_name": "auto_sync"}, "t")
    assert payload_key(event, ("daemon_name@hostname", "daemon_name")) == "auto_sync"
    with pytest.raises(MalformedEvent, match="names no config_key or config"):
        payload_key(RouterEvent.new("TRAINING_STARTED", {"config_key": ""}, "t"), CONFIG)
    assert StateView().snapshot() == {"collections": {}, "by_status": {}, "flags": {}, "counters": {}, "latest": {}}


# -- through a real router ------------------------------------------------------------------------------


@pytest.fixture
def memory_router() -> Iterator[UnifiedEventRouter]:
    name = unique("coord")
    yield UnifiedEventRouter(RouterConfig(redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}",
                                          node_id="test-node", start_position="earliest"))


async def test_health_manager_chain_through_the_buses(memory_router: UnifiedEventRouter) -> None:
    health = COORDINATOR_CLASSES["health_manager"](memory_router)
    jobs = COORDINATOR_CLASSES["job_scheduler"](memory_router)
    health.wire()
    jobs.wire()
    await memory_router.start()
    try:
        await memory_router.publish("TASK_SPAWNED", {"task_id": "j1", "node_id": "gpu-3"}, source="test")
        await until(lambda: status_of(jobs, "jobs", "j1") == "running", 10, "job tracked")
        await memory_router.publish("HOST_OFFLINE", {"node_id": "gpu-3"}, source="test")
        # HOST_OFFLINE -> NODE_UNHEALTHY -> RECOVERY_INITIATED (health), and TASK_ORPHANED (jobs)
        await until(lambda: status_of(health, "nodes", "gpu-3") == "recovering", 10, "recovery started")
        await until(lambda: status_of(jobs, "jobs", "j1") == "orphaned", 10, "job orphaned")
        unhealthy = memory_router.history(event_type="NODE_UNHEALTHY")
        assert len(unhealthy) == 1 and unhealthy[0].source == "health_manager"
        offline = memory_router.history(event_type="HOST_OFFLINE")[0]
        assert unhealthy[0].trace_id == offline.trace_id and unhealthy[0].parent_event_id == offline.event_id
        assert unhealthy[0].payload["cause_event_id"] == offline.event_id
    finally:
        health.shutdown()
        jobs.shutdown()
        await memory_router.stop()
    assert not memory_router.has_subscribers("HOST_OFFLINE")
