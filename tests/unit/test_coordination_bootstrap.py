"""bootstrap_coordination and friends: flags, status shape, idempotency, failures, readiness, shutdown,
with and without a running event loop, on in-process buses (memory://) configured through the
environment as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coordination import coordinators, event_router
from coordination.config import RouterConfig
from coordination.coordination_bootstrap import (
    COORDINATOR_INIT_ORDER,
    COORDINATOR_LAYERS,
    COORDINATOR_REGISTRY,
    ENABLE_FLAGS,
    InitPattern,
    bootstrap_coordination,
    coordination_health,
    get_bootstrap_status,
    get_coordinator,
    is_coordination_ready,
    reset_bootstrap_state,
    shutdown_coordination,
)
from coordination.event_router import UnifiedEventRouter, get_router
from tests.support import unique, until


@pytest.fixture(autouse=True)
def memory_buses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    name = unique("boot")
    monkeypatch.setenv("RINGRIFT_REDIS_URL", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_KAFKA_BOOTSTRAP", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_ROUTER_START", "earliest")
    monkeypatch.setenv("RINGRIFT_NODE_ID", "node-a")
    event_router.reset_router()
    reset_bootstrap_state()
    yield
    reset_bootstrap_state()
    event_router.reset_router()


def stop_router_sync() -> None:
    get_router().stop_sync()


# -- the registry ------------------------------------------------------------------------------------


def test_registry_layers_and_flags_come_from_the_catalog() -> None:
    assert len(COORDINATOR_REGISTRY) == 33 and len(COORDINATOR_INIT_ORDER) == 31
    assert COORDINATOR_INIT_ORDER[0] == "task_coordinator"
    assert COORDINATOR_INIT_ORDER[-2:] == ("pipeline_orchestrator", "curriculum_integration")
    assert COORDINATOR_REGISTRY["error_coordinator"].pattern is InitPattern.DELEGATE
    assert COORDINATOR_REGISTRY["error_coordinator"].delegate_to == "health_manager"
    assert COORDINATOR_REGISTRY["recovery_manager"].pattern is InitPattern.SKIP
    assert COORDINATOR_REGISTRY["pipeline_orchestrator"].pattern is InitPattern.SPECIAL_CASE
    assert COORDINATOR_REGISTRY["health_manager"].enable_flags == ("enable_health", "enable_error")
    assert [layer.number for layer in COORDINATOR_LAYERS] == list(range(1, 9))
    assert len(ENABLE_FLAGS) == 33 and {"enable_recovery", "enable_integrations", "enable_per"} <= set(ENABLE_FLAGS)


def test_the_generated_catalog_is_current() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "scripts/gen_coordinator_catalog.py", "--check"], cwd=root,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- bootstrapping -----------------------------------------------------------------------------------


def test_bootstrap_without_a_running_loop_wires_and_announces_every_coordinator() -> None:
    assert not is_coordination_ready()
    status = bootstrap_coordination()
    try:
        assert status["initialized"] is True and status["errors"] == [] and status["shutdown_requested"] is False
        assert list(status["coordinators"]) == list(COORDINATOR_INIT_ORDER)
        assert status["coordinators"]["task_coordinator"] == {"enabled": True, "initialized": True,
                                                              "subscribed": True, "error": None}
        assert status["initialized_count"] == status["subscribed_count"] == status["total_count"] == 31
        assert status["disabled_count"] == 0
        assert datetime.fromisoformat(status["started_at"]) <= datetime.fromisoformat(status["completed_at"])
        json.dumps(status)
        assert is_coordination_ready()
        router = get_router()
        assert router.has_subscribers("HOST_OFFLINE") and router.has_subscribers("TRAINING_STARTED")
        assert router.get_stats()["published"]["data"] == 31  # one COORDINATOR_HEALTHY each
    finally:
        stop_router_sync()


async def test_bootstrap_inside_a_running_loop_and_events_change_the_views() -> None:
    status = bootstrap_coordination()  # publishes are scheduled: this call does not block the loop
    assert status["initialized_count"] == 31
    router = get_router()
    await router.start()
    try:
        standby = get_coordinator("standby_coordinator")
        assert standby is not None
        await until(lambda: len(standby.view.keys_with_status("coordinators", "healthy")) == 31, 10,
                    "all 31 announcements seen")
        assert standby.view.entry("coordinators", "task_coordinator@node-a") is not None
        await router.publish("TRAINING_STARTED", {"config_key": "hex8_2p"}, source="trainer")
        await router.publish("HOST_OFFLINE", {"node_id": "gpu-3"}, source="monitor")
        training, health = get_coordinator("training_coordinator"), get_coordinator("health_manager")
        assert training is not None and health is not None
        await until(lambda: (training.view.entry("runs", "hex8_2p") or {}).get("status") == "running", 10, "run")
        await until(lambda: (health.view.entry("nodes", "gpu-3") or {}).get("status") == "recovering", 10,
                    "node recovery started")
        assert coordination_health()["health_manager"].healthy
    finally:
        shutdown_coordination()
        await router.stop()


def test_disabled_coordinators_are_reported_as_disabled() -> None:
    status = bootstrap_coordination(enable_leadership=False, enable_selfplay=False, enable_health=False)
    try:
        assert status["coordinators"]["leadership_coordinator"] == {"enabled": False, "initialized": False,
                                                                    "subscribed": False, "error": None}
        assert not status["coordinators"]["selfplay_scheduler"]["enabled"]
        assert status["disabled_count"] == 3 and status["total_count"] == status["initialized_count"] == 28
        assert get_coordinator("leadership_coordinator") is None
        health = get_coordinator("health_manager")  # enable_error still on: its errors part
        assert health is not None and health.get_status()["parts"] == ["errors"]
        assert "HOST_OFFLINE" not in health.event_types and "DAEMON_CRASH_LOOP_DETECTED" in health.event_types
        assert is_coordination_ready()  # every enabled coordinator is up
    finally:
        stop_router_sync()


def test_health_manager_needs_enable_health_or_enable_error() -> None:
    status = bootstrap_coordination(enable_health=False, enable_error=False, enable_recovery=False)
    try:
        assert status["coordinators"]["health_manager"]["enabled"] is False
    finally:
        stop_router_sync()


def test_flags_without_a_coordinator_of_their_own_reach_the_coordinators() -> None:
    bootstrap_coordination(enable_recovery=False, enable_integrations=False, pipeline_auto_trigger=True,
                           training_epochs=20, training_batch_size=256, training_model_version="v5",
                           training_data_path="data/best.npz", use_best_data=True, register_with_registry=False)
    try:
        health, pipeline = get_coordinator("health_manager"), get_coordinator("pipeline_orchestrator")
        assert health is not None and pipeline is not None
        assert health.settings["recovery"] is False and health.react is False
        assert all(not get_coordinator(name).react for name in COORDINATOR_INIT_ORDER)  # type: ignore[union-attr]
        assert pipeline.settings == {"auto_trigger": True, "training_epochs": 20, "training_batch_size": 256,
                                     "training_model_version": "v5", "training_data_path": "data/best.npz",
                                     "use_best_data": True}
        assert coordination_health() == {}  # not registered
        options = get_bootstrap_status()["options"]
        assert options["enable_recovery"] is False and options["pipeline_auto_trigger"] is True
    finally:
        stop_router_sync()


def test_registered_coordinators_are_in_the_health_roll_up() -> None:
    bootstrap_coordination()
    try:
        health = coordination_health()
        assert set(health) == set(COORDINATOR_INIT_ORDER) and all(h.healthy for h in health.values())
        assert get_bootstrap_status()["registered"] == list(COORDINATOR_INIT_ORDER)
    finally:
        stop_router_sync()


def test_bad_arguments_are_refused_with_one_line() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'enable_leadershp' "
                                        r"\(did you mean 'enable_leadership'\?\)"):
        bootstrap_coordination(enable_leadershp=False)
    with pytest.raises(TypeError, match="enable_sync must be True or False, got 'no'"):
        bootstrap_coordination(enable_sync="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="training_epochs must be a positive integer or None, got 0"):
        bootstrap_coordination(training_epochs=0)
    with pytest.raises(ValueError, match="training_data_path must be a non-empty string"):
        bootstrap_coordination(training_data_path=" ")
    assert get_bootstrap_status()["initialized"] is False


async def test_require_master_loop_needs_the_router_running() -> None:
    with pytest.raises(RuntimeError, match="require_master_loop=True, but the router's bus readers do not run"):
        bootstrap_coordination(require_master_loop=True)
    router = get_router()
    await router.start()
    try:
        assert bootstrap_coordination(require_master_loop=True)["initialized_count"] == 31
    finally:
        await router.stop()


def test_a_second_call_returns_the_status_and_only_adds_newly_enabled_coordinators() -> None:
    first = bootstrap_coordination(enable_metrics=False)
    try:
        task = get_coordinator("task_coordinator")
        assert first["coordinators"]["metrics_orchestrator"]["enabled"] is False and is_coordination_ready()
        again = bootstrap_coordination(enable_metrics=False)
        assert again["coordinators"] == first["coordinators"] and get_coordinator("task_coordinator") is task
        assert again["started_at"] == first["started_at"]
        third = bootstrap_coordination()  # metrics now enabled: initialised, the others untouched
        assert third["coordinators"]["metrics_orchestrator"] == {"enabled": True, "initialized": True,
                                                                 "subscribed": True, "error": None}
        assert get_coordinator("task_coordinator") is task and third["total_count"] == 31
        assert is_coordination_ready()
        assert get_router().get_stats()["published"]["data"] == 31  # 30 + 1 announcements
    finally:
        stop_router_sync()


def test_a_coordinator_that_fails_is_recorded_and_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(coordinators.COORDINATOR_CLASSES["model_coordinator"]):  # type: ignore[misc,valid-type]
        def __init__(self, router: Any, **settings: Any) -> None:
            raise RuntimeError("model store unreachable")

    monkeypatch.setitem(coordinators.COORDINATOR_CLASSES, "model_coordinator", Broken)
    status = bootstrap_coordination()
    try:
        assert status["coordinators"]["model_coordinator"] == {
            "enabled": True, "initialized": False, "subscribed": False,
            "error": "RuntimeError: model store unreachable"}
        assert status["errors"] == ["model_coordinator: RuntimeError: model store unreachable"]
        assert status["initialized_count"] == 30 and status["total_count"] == 31
        assert status["coordinators"]["curriculum_integration"]["initialized"]
        assert not is_coordination_ready()
        assert get_router().get_stats()["published"]["data"] == 31  # 30 COORDINATOR_HEALTHY, 1 _INIT_FAILED
    finally:
        stop_router_sync()


def test_announcements_stop_at_the_first_refusal_and_are_recorded() -> None:
    router = UnifiedEventRouter(RouterConfig(redis_url="redis://127.0.0.1:9/0", kafka_bootstrap=None,
                                             node_id="node-b", publish_retry_budget_s=0.2))
    try:
        status = bootstrap_coordination(router=router)
        assert status["initialized_count"] == 31
        assert len(status["errors"]) == 1 and status["errors"][0].startswith("announcements stopped: BrokerUnavailable")
        assert is_coordination_ready()
    finally:
        router.stop_sync()


def test_shutdown_runs_in_reverse_order_and_unsubscribes() -> None:
    assert shutdown_coordination() == {"shutdown": False, "reason": "not initialized"}
    bootstrap_coordination(enable_per=False)
    try:
        result = shutdown_coordination()
        expected = [n for n in reversed(COORDINATOR_INIT_ORDER) if n != "per_orchestrator"]
        assert result == {"shutdown": True, "results": dict.fromkeys(expected, True), "successful": 30, "failed": 0}
        assert list(result["results"]) == expected
        router = get_router()
        assert not router.has_subscribers("TASK_SPAWNED") and not router.has_subscribers("LEADER_ELECTED")
        status = get_bootstrap_status()
        assert status["initialized"] is False and status["shutdown_requested"] is True
        assert status["subscribed_count"] == 0 and not is_coordination_ready()
        assert shutdown_coordination()["shutdown"] is False
        kept = get_coordinator("task_coordinator")
        assert kept is not None and not kept.subscribed  # its view stays readable
        again = bootstrap_coordination()  # afresh
        assert again["initialized_count"] == 31 and again["shutdown_requested"] is False
        assert get_coordinator("task_coordinator") is not kept and is_coordination_ready()
    finally:
        stop_router_sync()


def test_readiness_follows_the_coordinators() -> None:
    bootstrap_coordination()
    try:
        assert is_coordination_ready()
        coordinator = get_coordinator("resource_coordinator")
        assert coordinator is not None
        coordinator.shutdown()
        assert not is_coordination_ready()
        coordinator.wire()
        assert is_coordination_ready()
    finally:
        stop_router_sync()
