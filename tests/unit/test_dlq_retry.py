"""DLQ_RETRY on a manual clock: back-off boundaries, 5 tries, abandonment at 168 h, announcements
(with a stand-in router), and on the memory router: a re-drive really runs the handler again, and a
re-drive that fails again becomes a new, linked dead letter; the chain stops after 5 tries."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from brokers.errors import BrokerUnavailable
from coordination.config import RouterConfig
from coordination.daemon_clock import ManualClock
from coordination.daemons.dlq_retry import DlqRetryDaemon, backoff
from coordination.dlq import DeadLetter
from coordination.dlq_status import LetterStatus, MemoryStatusStore
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import memory_router_config, unique, until

T0 = 1_700_000_000.0


def _config(**overrides: object) -> RouterConfig:
    return memory_router_config(**{"max_attempts": 1, **overrides})


class FakeDlq:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def list(self) -> list[DeadLetter]:
        return list(self.letters)


class FakeRouter:
    """What DLQ_RETRY uses of a router: config, dlq, publish (which may be made to fail)."""

    def __init__(self) -> None:
        self.config = _config()
        self.dlq = FakeDlq()
        self.fail = False
        self.published: list[tuple[RouterEvent, dict[str, Any]]] = []

    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      *, event_id: str | None = None, parent_event_id: str | None = None, trace_id: str | None = None,
                      correlation_id: str | None = None, target_group: str | None = None,
                      **routes: Any) -> RouterEvent:
        if self.fail and source.startswith("dlq_retry:"):
            raise BrokerUnavailable("the data bus is down")
        lineage = {"event_id": event_id, "parent_event_id": parent_event_id, "trace_id": trace_id,
                   "correlation_id": correlation_id, "target_group": target_group}
        event = RouterEvent.new(event_type, payload, source, **{k: v for k, v in lineage.items() if v is not None})
        self.published.append((event, routes))
        return event

    def of(self, event_type: str) -> list[RouterEvent]:
        return [e for e, _ in self.published if e.event_type == event_type]


def letter(router: FakeRouter, *, at: float = T0, stage: str = "handle", event: RouterEvent | None = None,
           bus: str = "data") -> DeadLetter:
    event = event or RouterEvent.new("TRAINING_COMPLETED", {"config_key": "hex8_2p", "n": uuid.uuid4().hex})
    made = DeadLetter(dead_letter_id=str(uuid.uuid4()), stage=stage, event=event, bus=bus,  # type: ignore[arg-type]
                      consumer_group=router.config.group, node_id=router.config.node_id, handler="h",
                      first_failure_at=at, last_failure_at=at)
    router.dlq.letters.append(made)
    return made


def daemon(router: Any, clock: ManualClock) -> DlqRetryDaemon:
    return DlqRetryDaemon(router, clock=clock, store=MemoryStatusStore(unique("store")))


async def at(clock: ManualClock, when: float) -> None:
    await clock.advance(when - clock.time())


def test_backoff_is_60s_doubling_capped_at_an_hour() -> None:
    assert [backoff(n) for n in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


async def test_tries_follow_the_backoff_and_stop_after_5() -> None:
    router, clock = FakeRouter(), ManualClock(T0)
    router.fail = True
    dead = letter(router)
    d = daemon(router, clock)
    when = T0
    for tries in range(5):
        when += backoff(tries)
        await at(clock, when - 0.001)
        assert (await d.run_pass()).failed_tries == []  # not yet due
        await at(clock, when)
        report = await d.run_pass()
        assert report.failed_tries == [dead.dead_letter_id]
        status = (await d.statuses())[dead.dead_letter_id]
        assert status.tries == tries + 1 and status.last_try_at == when
    assert status.state == "abandoned" and "BrokerUnavailable" in status.reason
    await at(clock, when + 7200)
    assert (await d.run_pass()).failed_tries == []


async def test_a_letter_is_abandoned_once_its_first_failure_is_168_hours_old() -> None:
    limit = 168 * 3600.0
    router, clock = FakeRouter(), ManualClock(T0)
    old = letter(router)
    await at(clock, T0 + limit - 1)
    report = await daemon(router, clock).run_pass()
    assert report.redriven == [old.dead_letter_id]  # 1 s before the limit it is still re-driven

    router2, clock2 = FakeRouter(), ManualClock(T0)
    stale = letter(router2)
    await at(clock2, T0 + limit)
    d = daemon(router2, clock2)
    report = await d.run_pass()
    assert report.abandoned == [stale.dead_letter_id] and report.redriven == []
    assert (await d.statuses())[stale.dead_letter_id].state == "abandoned"


async def test_redrive_goes_to_the_letters_bus_with_the_dlq_source_and_the_dead_event_as_parent() -> None:
    router, clock = FakeRouter(), ManualClock(T0)
    dead = letter(router, bus="cross")
    twin = letter(router, event=dead.event, bus="cross")  # a second handler failed on the same event
    undecodable = letter(router, stage="decode")
    undecodable.event = None
    await at(clock, T0 + 60)
    d = daemon(router, clock)
    report = await d.run_pass()
    redrives = router.of("TRAINING_COMPLETED")
    assert len(redrives) == 1 and sorted(report.redriven) == sorted([dead.dead_letter_id, twin.dead_letter_id])
    event, routes = router.published[0]
    assert event.source == f"dlq_retry:{dead.dead_letter_id}" and event.parent_event_id == dead.event.event_id
    assert event.event_id != dead.event.event_id and event.payload == dead.event.payload
    assert routes == {"route_to_data_bus": False, "route_to_stage_bus": False, "route_to_cross_process": True}
    statuses = await d.statuses()
    assert statuses[undecodable.dead_letter_id].state == "abandoned"
    assert statuses[dead.dead_letter_id].redriven_as == event.event_id
    assert [e.payload["count"] for e in router.of("DLQ_EVENTS_REPLAYED")] == [2]


@pytest.mark.parametrize(("pending", "announced"), [(49, False), (50, True)])
async def test_stale_events_are_announced_from_50_pending(pending: int, announced: bool) -> None:
    router, clock = FakeRouter(), ManualClock(T0)
    for _ in range(pending):
        letter(router)
    report = await daemon(router, clock).run_pass()  # none due yet: all pending
    assert report.pending == pending
    assert [e.payload["pending_count"] for e in router.of("DLQ_STALE_EVENTS")] == ([pending] if announced else [])


# -- on the memory router -------------------------------------------------------------------------------------


@pytest.fixture
async def router() -> AsyncIterator[UnifiedEventRouter]:
    r = UnifiedEventRouter(_config())
    await r.start()
    yield r
    await r.stop()




async def letters_of(router: UnifiedEventRouter, count: int) -> list[DeadLetter]:
    assert router.dlq is not None
    deadline = time.monotonic() + 5.0
    while len(found := await router.dlq.list()) < count:
        assert time.monotonic() < deadline, f"{len(found)} dead letters, expected {count}"
        await asyncio.sleep(0.02)
    return found


async def test_a_redrive_runs_the_handler_again_and_a_recovered_letter_stays_redriven(
        router: UnifiedEventRouter) -> None:
    calls: list[RouterEvent] = []

    def handler(event: RouterEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("first time fails")

    router.subscribe("TRAINING_COMPLETED", handler)
    original = await router.publish("TRAINING_COMPLETED", {"config_key": "hex8_2p"}, source="trainer")
    [dead] = await letters_of(router, 1)
    clock = ManualClock(dead.last_failure_at)
    d = DlqRetryDaemon(router, clock=clock)
    await clock.advance(60.0)
    assert (await d.run_pass()).redriven == [dead.dead_letter_id]
    await until(lambda: len(calls) == 2)
    assert calls[1].source == f"dlq_retry:{dead.dead_letter_id}" and calls[1].parent_event_id == original.event_id
    assert calls[1].origin == calls[0].origin  # back on the bus it failed on
    await clock.advance(3600.0)
    await d.run_pass()
    await asyncio.sleep(0.2)
    assert len(await letters_of(router, 1)) == 1 and len(calls) == 2
    status = (await d.statuses())[dead.dead_letter_id]
    assert status.state == "redriven" and status.tries == 1 and status.failed_again_as == ""


async def test_a_redrive_that_fails_again_is_a_new_linked_letter_and_the_chain_ends_after_5_tries(
        router: UnifiedEventRouter) -> None:
    calls: list[RouterEvent] = []

    def handler(event: RouterEvent) -> None:
        calls.append(event)
        raise RuntimeError(f"always fails ({len(calls)})")

    router.subscribe("TRAINING_COMPLETED", handler)
    await router.publish("TRAINING_COMPLETED", {"config_key": "sq8_2p"}, source="trainer")
    [first] = await letters_of(router, 1)
    clock = ManualClock(first.last_failure_at)
    d = DlqRetryDaemon(router, clock=clock)
    for tries in range(5):
        await clock.advance(backoff(tries) - 1)
        assert (await d.run_pass()).redriven == []
        await clock.advance(1)
        assert len((await d.run_pass()).redriven) == 1
        await letters_of(router, tries + 2)  # the re-drive failed again: a new dead letter
    await d.run_pass()
    letters = await router.dlq.list()  # type: ignore[union-attr]
    statuses: dict[str, LetterStatus] = await d.statuses()
    assert len(calls) == 6 and len(letters) == 6
    for parent, child in itertools.pairwise(letters):
        assert child.event is not None and child.event.source == f"dlq_retry:{parent.dead_letter_id}"
        assert statuses[parent.dead_letter_id].state == "redriven"
        assert statuses[parent.dead_letter_id].failed_again_as == child.dead_letter_id
        assert statuses[child.dead_letter_id].parent_id == parent.dead_letter_id
    last = statuses[letters[-1].dead_letter_id]
    assert last.state == "abandoned" and last.tries == 5 and last.root_id == first.dead_letter_id
    assert d.health_check().details["redriven"] == 5


async def test_a_pass_before_the_router_is_connected_connects_it_instead_of_failing() -> None:
    # In a node agent DLQ_RETRY may run its first pass while EVENT_ROUTER is still connecting.
    router = UnifiedEventRouter(_config())
    try:
        assert router.dlq is None
        report = await daemon(router, ManualClock(T0)).run_pass()
        assert router.dlq is not None and report is not None
    finally:
        await router.stop()
