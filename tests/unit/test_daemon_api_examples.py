"""The API reference's examples of sections 1, 5 and 6 (daemon manager, health checks), run as written
with the `app.` import prefix dropped. Two deviations, both forced: `DaemonType.MY_DAEMON` and
`DaemonType.SOME_DAEMON` are not catalog members, so the custom daemon is registered by its string
name ("MY_DAEMON"), which is how custom types work here. The stand-in daemons registered first are
test doubles for daemons the examples assume (their real implementations come with later issues).
Section 6's sync examples need the sync facade and are not run here.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordination.daemon_manager import DaemonManager, get_daemon_manager
from coordination.daemon_types import DAEMON_PROFILES, DaemonInfo, DaemonManagerConfig, DaemonState, DaemonType
from coordination.event_router import reset_router
from tests.support import unique


class StandIn:
    """A test double for a built-in daemon: runs until stopped, always healthy."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    def health_check(self) -> bool:
        return True


@pytest.fixture
def process_singletons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    name = unique("mem")
    monkeypatch.setenv("RINGRIFT_COORDINATION_DIR", str(tmp_path))
    monkeypatch.setenv("RINGRIFT_REDIS_URL", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_KAFKA_BOOTSTRAP", f"memory://{name}")
    reset_router()
    DaemonManager.reset_instance()
    yield
    DaemonManager.reset_instance()
    reset_router()


async def test_section_1_daemon_manager_api(process_singletons: None) -> None:
    # Getting the Manager
    manager = get_daemon_manager()
    manager = DaemonManager.get_instance()
    for daemon_type in {*DAEMON_PROFILES["coordinator"], DaemonType.AUTO_SYNC, DaemonType.DATA_PIPELINE}:
        manager.register_factory(daemon_type, StandIn)

    # Starting Daemons
    success = await manager.start(DaemonType.AUTO_SYNC)
    assert success
    success = await manager.start(DaemonType.DATA_PIPELINE, wait_for_deps=True)
    assert success
    await manager.start_all()
    await manager.start_all(profile="coordinator")  # or "training_node"

    # Stopping Daemons
    success = await manager.stop(DaemonType.AUTO_SYNC)
    assert success
    await manager.shutdown()
    await manager.start_all(profile="coordinator")
    await manager.shutdown(timeout=10.0, force=True)
    await manager.start(DaemonType.AUTO_SYNC)

    # Querying Status
    status = manager.get_status()
    assert all(isinstance(k, DaemonType) and isinstance(v, DaemonInfo) for k, v in status.items())
    is_running = manager.is_running(DaemonType.AUTO_SYNC)
    assert is_running
    health_status = manager.get_all_daemon_health()
    assert health_status[DaemonType.AUTO_SYNC]["state"] == "running"
    printed = []
    if manager.liveness_probe():
        printed.append("All critical daemons healthy")
    assert printed

    # Registering Custom Daemons
    class MyCustomDaemon:
        def __init__(self) -> None:
            self._shutdown = asyncio.Event()

        async def start(self) -> None:
            pass

        async def wait_for_shutdown(self) -> None:
            await self._shutdown.wait()

    async def my_daemon_factory():  # type: ignore[no-untyped-def]
        """Factory function that runs the daemon."""
        daemon = MyCustomDaemon()
        await daemon.start()
        await daemon.wait_for_shutdown()

    manager.register_factory(
        daemon_type="MY_DAEMON",                # DaemonType.MY_DAEMON in the reference
        factory=my_daemon_factory,
        depends_on=[DaemonType.EVENT_ROUTER],  # Optional dependencies
        health_check_interval=30.0,             # Seconds between health checks
        auto_restart=True,                      # Restart on failure
        max_restarts=5,                         # Max restart attempts
    )
    await manager.start(DaemonType.EVENT_ROUTER)
    assert await manager.start("MY_DAEMON")

    # Handling Permanently Failed Daemons
    if manager.is_permanently_failed("SOME_DAEMON"):
        manager.clear_permanently_failed("SOME_DAEMON")
    await manager.shutdown(timeout=5.0, force=True)


def test_section_1_configuration_options(process_singletons: None) -> None:
    config = DaemonManagerConfig(
        auto_start=False,                    # Auto-start daemons on init
        enable_coordination_wiring=True,     # Enable event system wiring
        dependency_wait_timeout=30.0,        # Timeout waiting for dependencies
        dependency_poll_interval=0.5,        # Poll interval for dependencies
        health_check_interval=30.0,          # Default health check interval
        shutdown_timeout=30.0,               # Shutdown timeout
        force_kill_timeout=5.0,              # Force kill timeout after shutdown
        auto_restart_failed=True,            # Auto-restart failed daemons
        strict_registry_validation=False,    # Raise on registry errors
        max_restart_attempts=5,              # Max restart attempts per daemon
        recovery_cooldown=10.0,              # Cooldown between restarts
        critical_daemon_health_interval=15.0,# Faster checks for critical daemons
    )
    manager = DaemonManager(config=config)
    assert manager.config == DaemonManagerConfig()


def test_section_5_health_check_patterns() -> None:
    from coordination.contracts import CoordinatorStatus
    from coordination.health_check_helper import HealthCheckHelper
    from coordination.protocols import HealthCheckResult

    class MyDaemon:
        def __init__(self, errors: int, cycles: int) -> None:
            self._error_count, self._cycle_count, self._uptime = errors, cycles, 12.0
            self._start_time = time.time()

        def health_check(self) -> HealthCheckResult:
            """Check daemon health."""
            errors = self._error_count
            cycles = self._cycle_count

            # Determine status
            if errors > cycles * 0.5:
                status = CoordinatorStatus.STOPPED
                message = "High error rate"
            elif errors > cycles * 0.2:
                status = CoordinatorStatus.DEGRADED
                message = "Elevated error rate"
            else:
                status = CoordinatorStatus.RUNNING
                message = "Healthy"

            return HealthCheckResult(
                healthy=(status == CoordinatorStatus.RUNNING),
                status=status,
                message=message,
                details={
                    "cycle_count": cycles,
                    "error_count": errors,
                    "uptime_seconds": self._uptime,
                },
            )

        def helper_checks(self) -> list[tuple[bool, str]]:
            q: queue.Queue[int] = queue.Queue()
            is_ok1, msg = HealthCheckHelper.check_error_rate(
                errors=5, cycles=100, threshold=0.5
            )
            is_ok2, msg = HealthCheckHelper.check_uptime_grace(
                start_time=self._start_time, grace_period=30
            )
            is_ok3, msg = HealthCheckHelper.check_queue_depth(
                depth=q.qsize(), max_depth=1000
            )
            return [(is_ok1, ""), (is_ok2, ""), (is_ok3, msg)]

    assert MyDaemon(60, 100).health_check().status is CoordinatorStatus.STOPPED
    assert MyDaemon(30, 100).health_check().status is CoordinatorStatus.DEGRADED
    assert MyDaemon(1, 100).health_check().healthy
    assert [ok for ok, _ in MyDaemon(0, 0).helper_checks()] == [True, True, True]


async def test_section_6_full_daemon_lifecycle_and_event_pipeline(process_singletons: None,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from coordination.event_router import RouterEvent, get_router

    setup = get_daemon_manager()
    for daemon_type in (DaemonType.EVENT_ROUTER, DaemonType.DATA_PIPELINE, DaemonType.AUTO_SYNC,
                        DaemonType.FEEDBACK_LOOP):
        setup.register_factory(daemon_type, StandIn)

    async def main():  # type: ignore[no-untyped-def]
        manager = get_daemon_manager()

        # Start core daemons in order
        await manager.start(DaemonType.EVENT_ROUTER)
        await manager.start(DaemonType.DATA_PIPELINE)
        await manager.start(DaemonType.AUTO_SYNC)
        await manager.start(DaemonType.FEEDBACK_LOOP)

        # Monitor health
        while True:
            health = manager.get_all_daemon_health()
            for dtype, status in health.items():
                if not status.get("healthy", True):
                    print(f"Warning: {dtype.value} unhealthy")
            await asyncio.sleep(30)

    task = asyncio.create_task(main())
    await asyncio.sleep(0.1)
    started = (DaemonType.EVENT_ROUTER, DaemonType.DATA_PIPELINE, DaemonType.AUTO_SYNC, DaemonType.FEEDBACK_LOOP)
    assert [setup.get_daemon_info(t).state for t in started] == [DaemonState.RUNNING] * 4  # type: ignore[union-attr]
    task.cancel()
    assert "unhealthy" not in capsys.readouterr().out

    async def setup_pipeline():  # type: ignore[no-untyped-def]
        router = get_router()

        # Stage 1: On sync complete, trigger export
        async def on_sync_complete(event: RouterEvent):  # type: ignore[no-untyped-def]
            games_synced = event.payload.get("games_synced", 0)
            if games_synced > 100:
                await router.publish(
                    "EXPORT_TRIGGERED",
                    payload={"threshold_met": True},
                    source="pipeline"
                )

        router.subscribe("DATA_SYNC_COMPLETED", on_sync_complete)
        return router

    router = await setup_pipeline()
    assert router.has_subscribers("DATA_SYNC_COMPLETED")
    await setup.shutdown(timeout=5.0, force=True)
    await router.stop()
