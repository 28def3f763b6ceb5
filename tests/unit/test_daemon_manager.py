"""The manager's calls on the real clock: dependencies, start_all and profiles, stop and shutdown
(hanging daemons, force), health results of every shape, probes, custom types, singleton."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from coordination.contracts import CoordinatorStatus
from coordination.daemon_graph import DependencyError
from coordination.daemon_health import check_health, to_health_result
from coordination.daemon_manager import DaemonManager, get_daemon_manager
from coordination.daemon_types import CustomDaemonType, DaemonManagerConfig, DaemonState, DaemonType
from coordination.protocols import HealthCheckResult
from tests.support import until


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> None:
        self.events.append((event_type, dict(payload or {})))


class Waiter:
    """An object daemon that runs until stopped; records its name in `log` on run and on stop."""

    def __init__(self, name: str, log: list[str] | None = None, health: Any = True) -> None:
        self.name, self.log, self.health = name, log if log is not None else [], health
        self._done = asyncio.Event()

    async def run(self) -> None:
        self.log.append(f"run {self.name}")
        await self._done.wait()

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        self._done.set()

    def health_check(self) -> Any:
        return self.health


def make(tmp_path: Path, **config: Any) -> DaemonManager:
    settings = {"dependency_wait_timeout": 0.3, "dependency_poll_interval": 0.02, "shutdown_timeout": 1.0,
                "force_kill_timeout": 0.5, **config}
    return DaemonManager(DaemonManagerConfig(**settings), router=Recorder(), state_path=tmp_path / "s.json",
                         health_check_timeout=0.1)


# -- dependencies ------------------------------------------------------------------------------------------


async def test_start_waits_for_dependencies_and_never_starts_them(tmp_path: Path) -> None:
    m = make(tmp_path)
    m.register_factory("BASE", lambda: Waiter("base"))
    m.register_factory("TOP", lambda: Waiter("top"), depends_on=["BASE"])
    assert not await m.start("TOP", wait_for_deps=False)
    begin = time.monotonic()
    assert not await m.start("TOP")  # BASE never comes up: False after the dependency timeout
    assert 0.3 <= time.monotonic() - begin < 1.0 and not m.is_running("BASE")

    async def base_later() -> None:
        await asyncio.sleep(0.1)
        await m.start("BASE")

    helper = asyncio.create_task(base_later())
    assert await m.start("TOP", wait_for_deps=True)
    await helper
    assert m.is_running("TOP") and m.is_running("BASE")
    await m.shutdown()


async def test_start_logs_why_it_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = make(tmp_path)
    m.register_factory("TOP", lambda: Waiter("top"), depends_on=["GHOST"])
    m.register_factory("LONELY", lambda: Waiter("x"), depends_on=["OTHER"])
    m.register_factory("OTHER", lambda: Waiter("o"))
    with caplog.at_level(logging.WARNING):
        assert not await m.start("TOP")
        assert not await m.start("NOBODY")
        assert not await m.start("LONELY")
    text = caplog.text
    assert "TOP depends on unregistered GHOST" in text and "NOBODY: no factory registered" in text
    assert "dependencies not running after 0.3s: OTHER" in text


async def test_strict_registry_validation_raises(tmp_path: Path) -> None:
    m = make(tmp_path, strict_registry_validation=True)
    m.register_factory("TOP", lambda: Waiter("top"), depends_on=["GHOST"])
    with pytest.raises(DependencyError, match="GHOST"):
        await m.start("TOP")


def test_cycles_and_self_dependencies_are_refused_at_registration(tmp_path: Path) -> None:
    m = make(tmp_path)
    with pytest.raises(DependencyError, match="itself"):
        m.register_factory("A", lambda: Waiter("a"), depends_on=["A"])
    m.register_factory("A", lambda: Waiter("a"), depends_on=["B"])
    m.register_factory("B", lambda: Waiter("b"), depends_on=["C"])
    with pytest.raises(DependencyError, match="cycle: C -> A -> B -> C"):
        m.register_factory("C", lambda: Waiter("c"), depends_on=["A"])
    assert "C" not in [t.name for t in m.registered_types]


async def test_start_all_starts_dependencies_first_and_refuses_unknown_ones(tmp_path: Path) -> None:
    m = make(tmp_path)
    log: list[str] = []
    for name, deps in [("AUTO_SYNC", ["EVENT_ROUTER", "DATA_PIPELINE", "FEEDBACK_LOOP"]), ("EVENT_ROUTER", []),
                       ("FEEDBACK_LOOP", ["EVENT_ROUTER"]), ("DATA_PIPELINE", ["EVENT_ROUTER"])]:
        m.register_factory(name, lambda name=name: Waiter(name, log), depends_on=deps)
    results = await m.start_all()
    assert all(results.values()) and len(results) == 4
    await until(lambda: len(log) == 4)
    # waves by dependency; within a wave the catalog's startup order (DATA_PIPELINE before FEEDBACK_LOOP)
    assert log == ["run EVENT_ROUTER", "run DATA_PIPELINE", "run FEEDBACK_LOOP", "run AUTO_SYNC"]
    await m.shutdown()
    assert log[4:] == ["stop AUTO_SYNC", "stop DATA_PIPELINE", "stop FEEDBACK_LOOP", "stop EVENT_ROUTER"]
    m.register_factory("ORPHAN", lambda: Waiter("o"), depends_on=["GHOST"])
    with pytest.raises(DependencyError, match=r"GHOST \(needed by ORPHAN\)"):
        await m.start_all()


async def test_profiles_start_exactly_their_daemons_and_dependencies(tmp_path: Path) -> None:
    m = DaemonManager(DaemonManagerConfig(), router=Recorder(), state_path=tmp_path / "s.json",
                      profiles={"worker": ["JOB"], "broken": ["JOB", "MISSING"]})
    m.register_factory("JOB", lambda: Waiter("job"), depends_on=["QUEUE"])
    m.register_factory("QUEUE", lambda: Waiter("queue"))
    m.register_factory("EXTRA", lambda: Waiter("extra"))
    results = await m.start_all(profile="worker")
    assert {t.name: ok for t, ok in results.items()} == {"JOB": True, "QUEUE": True}
    assert not m.is_running("EXTRA")
    with pytest.raises(ValueError, match="unknown profile 'nope'; known profiles: broken, worker"):
        await m.start_all(profile="nope")
    with pytest.raises(DependencyError, match="MISSING"):
        await m.start_all(profile="broken")
    await m.shutdown()


async def test_catalog_profiles_by_default(tmp_path: Path) -> None:
    m = make(tmp_path)
    assert set(m.profiles) == {"coordinator", "training_node", "ephemeral", "selfplay", "minimal", "full"}
    m.register_factory(DaemonType.EVENT_ROUTER, lambda: Waiter("router"))
    assert await m.start_all(profile="minimal") == {DaemonType.EVENT_ROUTER: True}
    with pytest.raises(DependencyError, match="HEALTH_SERVER"):
        await m.start_all(profile="selfplay")
    await m.shutdown()


async def test_a_dependency_that_cannot_start_blocks_its_dependents(tmp_path: Path) -> None:
    m = make(tmp_path, max_restart_attempts=0)

    async def crash() -> None:
        raise RuntimeError("no")

    m.register_factory("BASE", crash)
    await m.start("BASE")
    await until(lambda: m.is_permanently_failed("BASE"))
    m.register_factory("TOP", lambda: Waiter("top"), depends_on=["BASE"])
    results = await m.start_all()
    assert {t.name: ok for t, ok in results.items()} == {"BASE": False, "TOP": False}


# -- stopping -------------------------------------------------------------------------------------------------


def stubborn(ignore: int, release: asyncio.Event) -> Any:
    """A coroutine daemon that ignores the first `ignore` cancellations (until `release` is set)."""

    async def run() -> None:
        ignored = 0
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                ignored += 1
                if ignored > ignore or release.is_set():
                    raise
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    if ignored + 1 > ignore:
                        raise
                    ignored += 1
    return run


async def test_shutdown_with_a_hanging_daemon_and_force(tmp_path: Path) -> None:
    m = make(tmp_path)
    release = asyncio.Event()
    m.register_factory("HANGS", stubborn(1, release))
    await m.start("HANGS")
    await asyncio.sleep(0.01)
    begin = time.monotonic()
    assert await m.shutdown(timeout=0.2, force=True)  # graceful cancel ignored; forced cancel works
    assert 0.2 <= time.monotonic() - begin < 1.0
    assert m.get_daemon_info("HANGS").state is DaemonState.STOPPED  # type: ignore[union-attr]


async def test_shutdown_without_force_leaves_a_hanging_daemon_and_reports_it(tmp_path: Path) -> None:
    m = make(tmp_path)
    release = asyncio.Event()
    m.register_factory("HANGS", stubborn(1, release))
    await m.start("HANGS")
    await asyncio.sleep(0.01)
    begin = time.monotonic()
    assert not await m.shutdown(timeout=0.2)
    assert time.monotonic() - begin < 1.0
    assert m.get_daemon_info("HANGS").state is DaemonState.STOPPING  # type: ignore[union-attr]
    assert await m.shutdown(timeout=0.1, force=True)


async def test_a_daemon_ignoring_every_cancellation_is_abandoned_within_the_bounds(tmp_path: Path) -> None:
    m = make(tmp_path, force_kill_timeout=0.2)
    release = asyncio.Event()
    m.register_factory("HANGS", stubborn(99, release))
    await m.start("HANGS")
    await asyncio.sleep(0.01)
    begin = time.monotonic()
    try:
        assert not await m.shutdown(timeout=0.2, force=True)
        assert 0.4 <= time.monotonic() - begin < 1.2
        assert m.get_daemon_info("HANGS").state is DaemonState.STOPPED  # type: ignore[union-attr]
    finally:
        release.set()  # let the abandoned task end before the loop closes
        await asyncio.sleep(0.05)


async def test_stop_one_daemon_and_unknown_types(tmp_path: Path) -> None:
    m = make(tmp_path)
    log: list[str] = []
    m.register_factory("ONE", lambda: Waiter("one", log))
    assert await m.stop("ONE")  # not running: fine
    assert not await m.stop("NEVER_REGISTERED")
    await m.start("ONE")
    await until(lambda: log == ["run one"])
    assert await m.stop("ONE") and log == ["run one", "stop one"] and not m.is_running("ONE")
    assert m.get_daemon_info("ONE").state is DaemonState.STOPPED  # type: ignore[union-attr]


async def test_restart_stops_and_starts_a_new_instance_without_counting_a_failure(tmp_path: Path) -> None:
    m = make(tmp_path)
    log: list[str] = []
    made: list[Waiter] = []
    m.register_factory("ONE", lambda: made.append(Waiter(f"one#{len(made)}", log)) or made[-1], max_restarts=1)
    assert not await m.restart("NEVER_REGISTERED")
    await m.start("ONE")
    await until(lambda: log == ["run one#0"])
    for n in range(1, 4):  # more restarts than max_restarts allows for failures
        assert await m.restart("ONE")
        await until(lambda n=n: log[-1] == f"run one#{n}")
    assert log == ["run one#0", "stop one#0", "run one#1", "stop one#1", "run one#2", "stop one#2", "run one#3"]
    assert await m.restart("ONE") and await m.restart("ONE")  # back to back: one new instance runs
    await until(lambda: log[-1].startswith("run") and m.is_running("ONE"))
    assert sum(entry.startswith("run") for entry in log) - sum(entry.startswith("stop") for entry in log) == 1
    info = m.get_daemon_info("ONE")
    assert info is not None and info.restart_count == 0 and m.is_running("ONE")
    assert not m.is_permanently_failed("ONE")
    await m.shutdown(timeout=1.0, force=True)


# -- health ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "healthy", "status", "message"), [
    (HealthCheckResult.degraded("slow"), True, CoordinatorStatus.DEGRADED, "slow"),
    (True, True, CoordinatorStatus.RUNNING, ""),
    (False, False, CoordinatorStatus.ERROR, ""),
    ({"healthy": False, "message": "disk"}, False, CoordinatorStatus.ERROR, "disk"),
    ({"healthy": True, "status": "degraded", "lag": 5}, True, CoordinatorStatus.DEGRADED, ""),
    ({}, True, CoordinatorStatus.RUNNING, ""),
    (None, True, CoordinatorStatus.RUNNING, ""),
])
def test_health_results_of_every_shape(raw: Any, healthy: bool, status: CoordinatorStatus, message: str) -> None:
    result = to_health_result(raw)
    assert (result.healthy, result.status, result.message) == (healthy, status, message)


def test_dict_extras_become_details() -> None:
    assert to_health_result({"healthy": True, "lag": 5, "details": {"a": 1}}).details == {"a": 1, "lag": 5}

    class Legacy:
        healthy = False
        message = "old style"

    assert (to_health_result(Legacy()).healthy, to_health_result(Legacy()).message) == (False, "old style")


async def test_check_health_sync_async_raising_and_hanging() -> None:
    class Async:
        async def health_check(self) -> dict[str, Any]:
            return {"healthy": False, "message": "async says no"}

    class Raises:
        def health_check(self) -> bool:
            raise KeyError("oops")

    class Hangs:
        async def health_check(self) -> bool:
            await asyncio.sleep(3600)
            return True

    assert (await check_health(Async(), 1.0)).message == "async says no"  # type: ignore[union-attr]
    raised = await check_health(Raises(), 1.0)
    assert raised is not None and not raised.healthy and "KeyError" in raised.message
    begin = time.monotonic()
    hung = await check_health(Hangs(), 0.05)
    assert hung is not None and not hung.healthy and hung.message == "health check timed out after 0.05s"
    assert time.monotonic() - begin < 0.5
    assert await check_health(object(), 1.0) is None


async def test_a_failing_check_does_not_stop_the_others_or_the_loop(tmp_path: Path) -> None:
    from coordination.daemon_clock import ManualClock

    clock = ManualClock()

    class Broken(Waiter):
        def health_check(self) -> Any:
            raise RuntimeError("check crashed")

    m = DaemonManager(DaemonManagerConfig(), router=Recorder(), clock=clock, state_path=tmp_path / "s.json",
                      health_check_timeout=0.05)
    m.register_factory("BROKEN", lambda: Broken("b"), health_check_interval=10, auto_restart=False)
    m.register_factory("FINE", lambda: Waiter("f", health={"healthy": True, "message": "fine"}),
                       health_check_interval=10)
    await m.start("BROKEN")
    await m.start("FINE")
    await clock.advance(10)
    health = m.get_all_daemon_health()
    broken, fine = health[CustomDaemonType("BROKEN")], health[CustomDaemonType("FINE")]
    assert broken["healthy"] is False and "check crashed" in broken["message"]
    assert fine["healthy"] is True and fine["message"] == "fine" and fine["state"] == "running"
    passes = m._health.passes
    await clock.advance(10)
    assert m._health.passes > passes and m.is_running("BROKEN") and m.is_running("FINE")
    await m.shutdown(timeout=1)


# -- probes -----------------------------------------------------------------------------------------------------


async def test_liveness_and_readiness(tmp_path: Path) -> None:
    m = make(tmp_path)
    assert m.liveness_probe() and not m.readiness_probe()
    assert m.not_ready_reasons() == ["no daemon started"]
    router = Waiter("router")
    worker = Waiter("worker")
    m.register_factory(DaemonType.EVENT_ROUTER, lambda: router, auto_restart=False)  # critical
    m.register_factory("WORKER", lambda: worker, auto_restart=False)
    await m.start(DaemonType.EVENT_ROUTER)
    await m.start("WORKER")
    await asyncio.sleep(0.01)
    assert m.liveness_probe() and m.readiness_probe()

    async def check_now() -> None:
        await m._health.run_pass(force=True)

    worker.health = {"healthy": True, "consumer_lag": 5000}
    await check_now()
    assert m.liveness_probe() and m.not_ready_reasons() == ["worker lags 5000 > 1000"]
    worker.health = False
    await check_now()
    assert m.liveness_probe() and not m.readiness_probe()  # a non-critical daemon does not decide liveness
    router.health = HealthCheckResult.unhealthy("bus down")
    await check_now()
    assert not m.liveness_probe()
    router.health = True
    await check_now()
    assert m.liveness_probe()
    await m.stop(DaemonType.EVENT_ROUTER)
    assert m.liveness_probe()  # stopped on purpose: no longer a started critical daemon
    await m.shutdown()


async def test_a_permanently_failed_critical_daemon_fails_liveness(tmp_path: Path) -> None:
    m = make(tmp_path, max_restart_attempts=0)

    async def crash() -> None:
        raise RuntimeError("dead")

    m.register_factory(DaemonType.DAEMON_WATCHDOG, crash)
    await m.start(DaemonType.DAEMON_WATCHDOG)
    await until(lambda: m.is_permanently_failed(DaemonType.DAEMON_WATCHDOG))
    assert not m.liveness_probe()
    health = m.get_daemon_health(DaemonType.DAEMON_WATCHDOG)
    assert health is not None and health["state"] == "failed" and health["healthy"] is False
    assert health["permanently_failed"] and m.health_check().healthy is False


# -- types, status, singleton --------------------------------------------------------------------------------------


async def test_custom_string_daemon_type(tmp_path: Path) -> None:
    m = make(tmp_path)
    key = m.register_factory("MY_DAEMON", lambda: Waiter("mine"))
    assert key == CustomDaemonType("MY_DAEMON")
    assert await m.start("my_daemon") and m.is_running("MY_DAEMON") and m.is_running(key)
    status = m.get_status()
    assert status[key].state is DaemonState.RUNNING and status[key] is not m.get_daemon_info(key)
    assert m.status_report()["daemons"]["my_daemon"]["state"] == "running"
    await m.shutdown()


async def test_a_failing_router_never_breaks_the_manager(tmp_path: Path) -> None:
    class Down:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("broker down")

    m = DaemonManager(DaemonManagerConfig(), router=Down(), state_path=tmp_path / "s.json")
    m.register_factory("ONE", lambda: Waiter("one"))
    assert await m.start("ONE") and m.is_running("ONE")
    assert await m.shutdown(timeout=1)
    assert m._events.failed >= 3 and m._events.published == 0


def test_singleton(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGRIFT_COORDINATION_DIR", str(tmp_path))
    DaemonManager.reset_instance()
    try:
        manager = get_daemon_manager()
        assert manager is DaemonManager.get_instance() is get_daemon_manager()
        assert manager._ledger.path == tmp_path / "daemon_restarts.json"
        DaemonManager.reset_instance()
        assert get_daemon_manager() is not manager
    finally:
        DaemonManager.reset_instance()
