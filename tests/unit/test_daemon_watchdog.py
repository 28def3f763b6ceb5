"""DAEMON_WATCHDOG on a manual clock: stuck detection (boundary), restart through the manager,
3 restarts per rolling hour, 60 s spacing, daemons without progress reporting left alone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordination.daemon_clock import ManualClock
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig, DaemonType
from coordination.daemons import watchdog
from coordination.daemons.watchdog import DaemonWatchdog


class Recorder:
    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> None:
        return None


class Staller:
    """Runs until stopped; its progress moves only when `progress()` is called."""

    instances: list[Staller]

    def __init__(self, clock: ManualClock, instances: list[Staller], *, report: bool = True) -> None:
        self._clock = clock
        self._done = asyncio.Event()
        if report:
            self.last_progress = clock.time()
        instances.append(self)

    def progress(self) -> None:
        self.last_progress = self._clock.time()

    async def run(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        self._done.set()


def make(tmp_path: Path, clock: ManualClock) -> DaemonManager:
    config = DaemonManagerConfig(shutdown_timeout=1.0, force_kill_timeout=0.5, recovery_cooldown=0.0)
    return DaemonManager(config, router=Recorder(), clock=clock, state_path=tmp_path / "s.json")


async def test_a_daemon_without_progress_beyond_the_limit_is_restarted_at_the_boundary_not_before(
        tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    m = make(tmp_path, clock)
    stuck: list[Staller] = []
    busy: list[Staller] = []
    silent: list[Staller] = []
    m.register_factory("STUCK", lambda: Staller(clock, stuck))
    m.register_factory("BUSY", lambda: Staller(clock, busy))
    m.register_factory("SILENT", lambda: Staller(clock, silent, report=False))  # no last_progress: not watched
    for name in ("STUCK", "BUSY", "SILENT"):
        assert await m.start(name)
    await clock.settle()
    dog = DaemonWatchdog(m, clock=clock, stuck_after=300.0)
    await clock.advance(300.0)
    busy[0].progress()
    assert await dog.check_once() == []  # exactly 300 s without progress is not stuck (strict >)
    await clock.advance(1.0)
    restarted = await dog.check_once()
    assert [k.name for k in restarted] == ["STUCK"]
    await clock.settle()
    assert len(stuck) == 2 and m.is_running("STUCK") and len(busy) == 1 and len(silent) == 1
    assert dog.health_check().healthy and dog.health_check().details["restarts"] == 1
    await m.shutdown(timeout=1.0, force=True)


async def test_restarts_are_spaced_60s_and_limited_to_3_per_rolling_hour(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    m = make(tmp_path, clock)
    stuck: list[Staller] = []
    m.register_factory("STUCK", lambda: Staller(clock, stuck))
    assert await m.start("STUCK")
    await clock.settle()
    dog = DaemonWatchdog(m, clock=clock, stuck_after=30.0)
    begin = clock.time()

    async def check_at(offset: float) -> bool:
        await clock.advance(begin + offset - clock.time())
        restarted = bool(await dog.check_once())
        await clock.settle()
        return restarted

    assert await check_at(31)  # restart 1
    assert not await check_at(62)  # stuck again (31 s) but only 31 s after the last restart
    assert "STUCK" in {k.upper() for k in dog.blocked}
    assert await check_at(91)  # 60 s after restart 1: restart 2
    assert await check_at(151)  # restart 3
    assert not await check_at(211)  # 3 within the hour
    assert not await check_at(31 + 3599)  # restart 1 is still within the hour
    health = dog.health_check()
    assert health.healthy and health.status.value == "degraded" and "stuck" in health.message
    assert await check_at(31 + 3600)  # restart 1 left the window
    assert len(stuck) == 5 and dog.restarts_total == 4
    await m.shutdown(timeout=1.0, force=True)


async def test_the_registered_watchdog_runs_on_the_manager_clock_and_skips_itself(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    m = make(tmp_path, clock)
    stuck: list[Staller] = []
    m.register_factory("STUCK", lambda: Staller(clock, stuck))
    m.register_factory(DaemonType.DAEMON_WATCHDOG, watchdog.factory(m, None, check_interval=30.0, stuck_after=60.0))
    assert await m.start("STUCK") and await m.start(DaemonType.DAEMON_WATCHDOG)
    await clock.settle()
    for _ in range(2):  # passes at 0, 30, 60: nothing stuck yet
        await clock.advance(30.0)
    assert len(stuck) == 1
    await clock.advance(30.0)  # pass at 90: 90 s > 60 s without progress
    for _ in range(100):
        if len(stuck) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(stuck) == 2 and m.is_running("STUCK") and m.is_running(DaemonType.DAEMON_WATCHDOG)
    dog = m.get_daemon_info(DaemonType.DAEMON_WATCHDOG).instance  # type: ignore[union-attr]
    assert dog.passes >= 4 and dog.health_check().healthy
    await m.shutdown(timeout=1.0, force=True)
