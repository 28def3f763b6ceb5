"""Daemon bases on the in-memory brokers: ConsumerDaemon, PeriodicDaemon (ManualClock), the
EVENT_ROUTER daemon and the consumer-group override of RouterConfig."""

from __future__ import annotations

import asyncio

import pytest

from coordination.config import RouterConfig
from coordination.daemon_clock import ManualClock
from coordination.daemons import event_router_daemon
from coordination.daemons.base import ConsumerDaemon
from coordination.daemons.leader import Leadership, StaticLeadership
from coordination.daemons.periodic import PeriodicDaemon
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import unique


def memory_config() -> RouterConfig:
    name = unique("mem")
    return RouterConfig(redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}-k", node_id="n1",
                        start_position="earliest", retry_initial_s=0.01, retry_max_s=0.01, max_attempts=1)


def test_group_name_overrides_the_consumer_group() -> None:
    assert RouterConfig(node_id="n1", service_name="s").group == "n1.s"
    assert RouterConfig(node_id="n1", service_name="s", group_name="g").group == "g"


class Recorder(ConsumerDaemon):
    daemon_type = "RECORDER_TEST"
    subscriptions = ("TRAINING_COMPLETED",)

    def __init__(self, config: RouterConfig) -> None:
        super().__init__(config)
        self.seen: list[int] = []

    async def handle(self, event: RouterEvent) -> None:
        if event.payload["n"] < 0:
            raise ValueError("bad event")
        self.seen.append(event.payload["n"])


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_consumer_daemon_consumes_in_its_type_group_and_reports_counts() -> None:
    config = memory_config()
    daemon = Recorder(config)
    assert daemon.config.group == "daemon.recorder_test" and daemon.config.spool_dir is None
    runner = asyncio.create_task(daemon.run())
    publisher = UnifiedEventRouter(config)
    try:
        await wait_for(lambda: daemon.router.is_running)
        assert [t.get_name() for t in daemon.router._consumers] == ["router-cross"]
        for n in (1, 2, -1):
            await publisher.publish("TRAINING_COMPLETED", {"n": n}, "test")
        await wait_for(lambda: daemon.health_check().details["errors"] == 1 and len(daemon.seen) == 2)
        health = daemon.health_check()
        assert daemon.seen == [1, 2] and health.details["handled"] == 2
        assert health.details["dead_lettered"] == 1 and not health.healthy  # 1 error in 3 > 10 %
    finally:
        await daemon.stop()
        await asyncio.wait_for(runner, 10)
        await publisher.stop()
    assert not daemon.router.is_running


async def test_consumer_daemon_is_unhealthy_when_its_consumer_ended() -> None:
    daemon = Recorder(memory_config())
    runner = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.router.is_running and daemon.health_check().healthy)
        daemon.router._consumers[0].cancel()
        await asyncio.sleep(0.05)
        assert not daemon.health_check().healthy
    finally:
        await daemon.stop()
        await asyncio.wait_for(runner, 10)


class Counter(PeriodicDaemon):
    interval_s = 10.0

    async def tick(self) -> None:
        if self.ticks == 2:
            raise RuntimeError("second tick fails")


async def test_periodic_daemon_ticks_every_interval_on_the_clock_and_survives_a_failing_tick() -> None:
    clock = ManualClock()
    daemon = Counter(clock=clock)
    runner = asyncio.create_task(daemon.run())
    await clock.settle()
    assert daemon.ticks == 1
    await clock.advance(9.9)
    assert daemon.ticks == 1
    await clock.advance(0.1)
    await clock.advance(10.0)
    assert (daemon.ticks, daemon.errors) == (3, 1)
    assert daemon.health_check().details["ticks"] == 3
    await daemon.stop()
    await asyncio.wait_for(runner, 1)


async def test_leader_only_periodic_daemon_ticks_only_while_leader() -> None:
    clock, leadership = ManualClock(), StaticLeadership(False)
    daemon = Counter(clock=clock, leader_only=True, leadership=leadership, interval_s=1.0)
    runner = asyncio.create_task(daemon.run())
    await clock.advance(5.0)
    assert daemon.ticks == 0
    leadership.set(True)
    await clock.advance(0.0)
    assert daemon.ticks == 1
    await clock.advance(1.0)
    assert daemon.ticks == 2
    leadership.set(False)
    await clock.advance(3.0)
    await asyncio.sleep(0.1)  # StaticLeadership.wait polls in real time
    assert daemon.ticks == 2  # leadership is checked before every tick
    await daemon.stop()
    await asyncio.wait_for(runner, 1)


def test_leader_only_needs_a_leadership() -> None:
    with pytest.raises(Exception, match="leadership"):
        Counter(leader_only=True)


async def test_leadership_without_kafka_is_this_process_and_is_announced() -> None:
    config = RouterConfig(redis_url="memory://x", kafka_bootstrap=None, node_id="n1")

    class Announcer:
        def __init__(self) -> None:
            self.events: list[tuple[str, dict]] = []

        async def publish(self, event_type: str, payload: dict | None = None, source: str = "", **_: object) -> None:
            self.events.append((event_type, dict(payload or {})))

    announcer = Announcer()
    leadership = Leadership(config, router=announcer, member_id="m1")
    await leadership.start()
    await leadership.wait(True)
    assert leadership.is_leader
    await leadership.stop()
    assert [(t, p["member_id"]) for t, p in announcer.events] == [("LEADER_ELECTED", "m1"), ("LEADER_LOST", "m1")]


async def test_event_router_daemon_runs_the_router_and_reports_its_consumers() -> None:
    router = UnifiedEventRouter(memory_config())
    daemon = event_router_daemon.factory(router)()
    assert not daemon.health_check().healthy  # not started
    runner = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.health_check().healthy)
        assert router.is_running and daemon.health_check().message == "OK"
        router._consumers[0].cancel()
        await asyncio.sleep(0.05)
        assert "ended" in daemon.health_check().message
    finally:
        await daemon.stop()
        await asyncio.wait_for(runner, 10)
    assert not router.is_running
