"""Supervision on a manual clock: restart back-off, cooldown, permanent failure, crash loop,
restart state persisted across managers, health-triggered restarts."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from coordination.daemon_clock import ManualClock
from coordination.daemon_manager import DaemonManager
from coordination.daemon_supervisor import restart_backoff
from coordination.daemon_types import DaemonManagerConfig, DaemonState


class Recorder:
    """A router stand-in that keeps what the manager publishes."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> None:
        self.events.append((event_type, dict(payload or {})))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == event_type]


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 0.0


def manager(tmp_path: Path, clock: ManualClock, **config: Any) -> tuple[DaemonManager, Recorder]:
    recorder = Recorder()
    settings = DaemonManagerConfig(**{"recovery_cooldown": 0.0, **config})
    return DaemonManager(settings, router=recorder, clock=clock, state_path=tmp_path / "restarts.json",
                         rng=NoJitter()), recorder


class Crasher:
    """A factory whose daemon fails at once with a given exception type; counts its runs."""

    def __init__(self, exc: type[BaseException] = ValueError) -> None:
        self.runs = 0
        self.exc = exc

    async def __call__(self) -> None:
        self.runs += 1
        raise self.exc(f"boom {self.runs}")


def test_backoff_doubles_from_5s_with_10_percent_jitter_capped_at_300s() -> None:
    class Edge(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def uniform(self, a: float, b: float) -> float:
            return a if self.value < 0 else b

    assert [restart_backoff(n, rng=NoJitter()) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert restart_backoff(0, rng=Edge(-1)) == pytest.approx(4.5)
    assert restart_backoff(0, rng=Edge(1)) == pytest.approx(5.5)
    assert restart_backoff(6, rng=Edge(1)) == 300.0
    assert restart_backoff(0, base=0.1, rng=NoJitter()) == 1.0
    assert all(4.5 <= restart_backoff(0) <= 5.5 for _ in range(50))


@pytest.mark.parametrize("exc", [ValueError, KeyError, RuntimeError, ImportError, OSError])
async def test_any_exception_restarts_with_backoff_then_fails_permanently(tmp_path: Path, exc: type) -> None:
    clock = ManualClock()
    m, recorder = manager(tmp_path, clock)
    crasher = Crasher(exc)
    m.register_factory("FLAKY", crasher, max_restarts=3)
    assert await m.start("FLAKY")
    await clock.settle()
    info = m.get_daemon_info("FLAKY")
    assert info is not None
    assert crasher.runs == 1 and info.state is DaemonState.RESTARTING and info.restart_count == 1
    await clock.advance(4.9)
    assert crasher.runs == 1
    await clock.advance(0.1)  # 5 s after the first failure
    assert crasher.runs == 2 and info.restart_count == 2
    await clock.advance(9.9)
    assert crasher.runs == 2
    await clock.advance(0.1)  # then 10 s
    assert crasher.runs == 3 and info.restart_count == 3
    await clock.advance(20.0)  # then 20 s: the fourth run fails with 3 restarts used up
    assert crasher.runs == 4
    assert info.state is DaemonState.FAILED and m.is_permanently_failed("FLAKY")
    assert "boom 4" in (info.last_error or "")
    await clock.advance(3600)
    assert crasher.runs == 4 and not m.is_running("FLAKY")
    assert recorder.of("DAEMON_PERMANENTLY_FAILED")[0]["restart_count"] == 3
    assert not await m.start("FLAKY")  # refused until cleared
    assert m.clear_permanently_failed("FLAKY") and not m.is_permanently_failed("FLAKY")
    assert info.state is DaemonState.STOPPED and info.restart_count == 0
    assert await m.start("FLAKY")
    await clock.settle()
    assert crasher.runs == 5
    await m.shutdown(timeout=1)


async def test_recovery_cooldown_spaces_restarts_of_a_daemon_that_dies_at_once(tmp_path: Path) -> None:
    clock = ManualClock()
    m, _ = manager(tmp_path, clock, recovery_cooldown=12.0)
    crasher = Crasher()
    m.register_factory("FLAKY", crasher)
    await m.start("FLAKY")
    await clock.advance(11.9)
    assert crasher.runs == 1  # back-off alone would have restarted it at 5 s
    await clock.advance(0.1)
    assert crasher.runs == 2
    await m.shutdown(timeout=1)


async def test_crash_loop_is_announced_once(tmp_path: Path) -> None:
    clock = ManualClock()
    m, recorder = manager(tmp_path, clock)
    crasher = Crasher()
    m.register_factory("FLAKY", crasher, max_restarts=10)
    await m.start("FLAKY")
    await clock.advance(5 + 10)  # restarts at t=0, 5 and 15 s: three within five minutes
    loops = recorder.of("DAEMON_CRASH_LOOP_DETECTED")
    assert loops == [{"daemon_name": "flaky", "restart_count": 3, "window_minutes": 5, "max_restarts": 10,
                      "hostname": loops[0]["hostname"], "source": "daemon_manager"}]
    await clock.advance(20 + 40)
    assert crasher.runs == 5 and len(recorder.of("DAEMON_CRASH_LOOP_DETECTED")) == 1
    await m.shutdown(timeout=1)


async def test_an_hour_without_failure_resets_the_restart_count(tmp_path: Path) -> None:
    clock = ManualClock()
    m, _ = manager(tmp_path, clock)
    runs = 0

    async def fails_after(seconds: float) -> None:
        nonlocal runs
        runs += 1
        await clock.sleep(seconds)
        raise RuntimeError("late")

    m.register_factory("SLOW_FAIL", lambda: fails_after(10 if runs < 2 else 4000), max_restarts=5)
    await m.start("SLOW_FAIL")
    await clock.advance(10 + 5 + 10)  # fail, wait 5 s, fail again
    info = m.get_daemon_info("SLOW_FAIL")
    assert info is not None and info.restart_count == 2
    await clock.advance(10 + 4000)  # this run lasted over an hour
    assert info.restart_count == 1
    await m.shutdown(timeout=1)


async def test_restart_state_survives_a_new_manager_and_expires_after_24h(tmp_path: Path) -> None:
    clock = ManualClock()
    first, _ = manager(tmp_path, clock)
    first.register_factory("FLAKY", Crasher(), max_restarts=1)
    first.register_factory("WOBBLY", Crasher(), max_restarts=5)
    await first.start("FLAKY")
    await first.start("WOBBLY")
    await clock.advance(5)
    assert first.is_permanently_failed("FLAKY")
    await first.shutdown(timeout=1)
    saved = json.loads((tmp_path / "restarts.json").read_text())
    assert set(saved) == {"timestamp", "counts", "restart_timestamps", "permanently_failed"}
    assert saved["counts"] == {"flaky": 1, "wobbly": 2} and list(saved["permanently_failed"]) == ["flaky"]

    second, _ = manager(tmp_path, clock)
    second.register_factory("FLAKY", Crasher(), max_restarts=1)
    second.register_factory("WOBBLY", Crasher(), max_restarts=5)
    assert second.is_permanently_failed("FLAKY")
    flaky, wobbly = second.get_daemon_info("FLAKY"), second.get_daemon_info("WOBBLY")
    assert flaky is not None and wobbly is not None
    assert flaky.state is DaemonState.FAILED and wobbly.restart_count == 2
    assert not await second.start("FLAKY")

    later = ManualClock(start=clock.time() + 24 * 3600 + 1)
    third, _ = manager(tmp_path, later)
    third.register_factory("FLAKY", Crasher(), max_restarts=1)
    info = third.get_daemon_info("FLAKY")
    assert info is not None and not third.is_permanently_failed("FLAKY") and info.restart_count == 0


async def test_an_unreadable_state_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "restarts.json").write_text("{not json")
    m, _ = manager(tmp_path, ManualClock())
    m.register_factory("FLAKY", Crasher())
    assert not m.is_permanently_failed("FLAKY")


async def test_a_daemon_that_returns_is_finished_not_restarted(tmp_path: Path) -> None:
    clock = ManualClock()
    m, recorder = manager(tmp_path, clock)
    runs = []

    async def one_shot() -> None:
        runs.append(1)

    m.register_factory("ONE_SHOT", one_shot)
    await m.start("ONE_SHOT")
    await clock.advance(600)
    info = m.get_daemon_info("ONE_SHOT")
    assert info is not None and info.state is DaemonState.STOPPED and runs == [1]
    assert recorder.of("DAEMON_STOPPED")[0]["reason"] == "finished"
    assert m.liveness_probe()


async def test_auto_restart_off_fails_at_the_first_crash(tmp_path: Path) -> None:
    clock = ManualClock()
    m, _ = manager(tmp_path, clock)
    crasher = Crasher()
    m.register_factory("FLAKY", crasher, auto_restart=False)
    await m.start("FLAKY")
    await clock.advance(600)
    info = m.get_daemon_info("FLAKY")
    assert info is not None and info.state is DaemonState.FAILED and crasher.runs == 1
    assert not m.is_permanently_failed("FLAKY")


class Sick:
    """An object daemon whose health is set from outside; counts stop() calls."""

    instances: list[Sick] = []

    def __init__(self) -> None:
        import asyncio

        self.healthy = True
        self.stops = 0
        self._done = asyncio.Event()
        Sick.instances.append(self)

    async def run(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        self.stops += 1
        self._done.set()

    def health_check(self) -> bool:
        return self.healthy


async def test_unhealthy_daemon_is_restarted_through_the_failure_path(tmp_path: Path) -> None:
    Sick.instances = []
    clock = ManualClock()
    m, recorder = manager(tmp_path, clock)
    m.register_factory("SICK", Sick, health_check_interval=10.0, startup_grace_period=0.0)
    await m.start("SICK")
    await clock.advance(10)
    assert len(Sick.instances) == 1 and m.get_daemon_health("SICK")["healthy"] is True  # type: ignore[index]
    Sick.instances[0].healthy = False
    await clock.advance(10)  # the check fails: stop() asked, the run ends, restart in 5 s
    info = m.get_daemon_info("SICK")
    assert info is not None and Sick.instances[0].stops == 1
    assert info.state is DaemonState.RESTARTING and info.restart_count == 1
    assert info.last_error == "health check failed: "
    await clock.advance(5)
    assert len(Sick.instances) == 2 and info.state is DaemonState.RUNNING
    changes = [(p["old_status"], p["new_status"]) for p in recorder.of("DAEMON_STATUS_CHANGED")]
    assert changes == [("stopped", "running"), ("running", "restarting"), ("restarting", "running")]
    await m.shutdown(timeout=1)
    assert Sick.instances[1].stops == 1


async def test_unhealthy_within_startup_grace_or_without_auto_restart_is_not_restarted(tmp_path: Path) -> None:
    Sick.instances = []
    clock = ManualClock()
    m, _ = manager(tmp_path, clock)
    m.register_factory("GRACEFUL", Sick, health_check_interval=10.0, startup_grace_period=25.0)
    m.register_factory("NO_RESTART", Sick, health_check_interval=10.0, startup_grace_period=0.0, auto_restart=False)
    await m.start("GRACEFUL")
    await m.start("NO_RESTART")
    await clock.settle()
    for sick in Sick.instances:
        sick.healthy = False
    await clock.advance(20)
    assert len(Sick.instances) == 2 and all(s.stops == 0 for s in Sick.instances)
    assert m.get_daemon_health("NO_RESTART")["healthy"] is False  # type: ignore[index]
    await clock.advance(10)  # 30 s: GRACEFUL's grace is over
    assert Sick.instances[0].stops == 1 and Sick.instances[1].stops == 0
    await m.shutdown(timeout=1)


async def test_health_loop_never_starts_a_daemon_nobody_asked_for(tmp_path: Path) -> None:
    clock = ManualClock()
    m, _ = manager(tmp_path, clock)
    started: list[str] = []

    def factory(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            started.append(name)
            await clock.sleep(10**9)
        return run

    m.register_factory("WANTED", factory("wanted"))
    m.register_factory("IDLE", factory("idle"))
    await m.start("WANTED")
    await clock.advance(3600)
    assert started == ["wanted"] and not m.is_running("IDLE")
    await m.shutdown(timeout=1)


def test_restart_state_lives_per_node_under_the_coordination_dir(tmp_path: Path) -> None:
    from coordination.daemon_state_store import default_state_path

    base = {"RINGRIFT_COORDINATION_DIR": str(tmp_path)}
    assert default_state_path(base) == tmp_path / "daemon_restarts.json"
    assert default_state_path({**base, "RINGRIFT_NODE_ID": "gpu-7"}) == tmp_path / "daemon_restarts.gpu-7.json"
    assert default_state_path({**base, "RINGRIFT_NODE_ID": "a/../b"}).parent == tmp_path  # no path tricks
    assert default_state_path({"RINGRIFT_NODE_ID": "n1"}).parent == Path.home() / ".ringrift" / "coordination"
