"""Re-driving by hand on the memory router: the plan (what is skipped and why, one publish per event
and group), intent-publish-done with a deterministic id, resuming an interrupted re-drive without a
second delivery, and the router's public lineage parameters (`event_id`, `parent_event_id`,
`trace_id`, `target_group`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brokers.errors import BrokerUnavailable
from coordination.config import RouterConfig
from coordination.dlq import DeadLetter
from coordination.dlq_redrive import plan_redrives, run_redrive
from coordination.dlq_status import LetterStatus, MemoryStatusStore, current_statuses, redrive_event_id
from coordination.event_router import RouterEvent, UnifiedEventRouter
from schemas.envelope import encode
from tests.support import unique, until

T0 = 1_700_000_000.0


def _config(bus: str, service: str) -> RouterConfig:
    return RouterConfig(redis_url=bus, kafka_bootstrap=bus, namespace="ns", node_id="n", service_name=service,
                        start_position="earliest", handler_timeout_s=2.0, max_attempts=1, retry_initial_s=0.01,
                        retry_max_s=0.02)


@pytest.fixture
async def routers() -> AsyncIterator[tuple[UnifiedEventRouter, UnifiedEventRouter]]:
    """Two routers (groups n.a and n.b) on one memory bus."""
    bus = f"memory://{unique('mem')}"
    pair = (UnifiedEventRouter(_config(bus, "a")), UnifiedEventRouter(_config(bus, "b")))
    yield pair
    for router in pair:
        await router.stop()


def letter(event: RouterEvent, group: str = "n.a", *, stage: str = "handle", bus: str = "data") -> DeadLetter:
    return DeadLetter(dead_letter_id=str(uuid.uuid4()), stage=stage, event=event, bus=bus,  # type: ignore[arg-type]
                      consumer_group=group, first_failure_at=T0, last_failure_at=T0)


def statuses_of(*letters: DeadLetter, **stored: LetterStatus) -> dict[str, LetterStatus]:
    return current_statuses(list(letters), dict(stored), T0, "cli@h")[0]


def test_the_plan_skips_what_cannot_or_need_not_be_redriven_and_makes_one_publish_per_event_and_group() -> None:
    event, other = RouterEvent.new("MODEL_PROMOTED", {"m": 1}), RouterEvent.new("MODEL_PROMOTED", {"m": 2})
    twin_a, twin_b = letter(event), letter(event)  # two handlers of group n.a failed on one event
    elsewhere, second = letter(event, "n.b"), letter(other)
    done, undecodable = letter(other), letter(other, stage="decode")
    statuses = statuses_of(twin_a, twin_b, elsewhere, second, done, undecodable)
    statuses[done.dead_letter_id].record("redriven", T0, "dlq_retry@n")
    plans, skipped = plan_redrives([twin_a, twin_b, elsewhere, second, done, undecodable], statuses)
    assert [(p.target_group, [x.dead_letter_id for x in p.letters]) for p in plans] == [
        ("n.a", [twin_a.dead_letter_id, twin_b.dead_letter_id]), ("n.b", [elsewhere.dead_letter_id]),
        ("n.a", [second.dead_letter_id])]
    assert plans[0].event_id == redrive_event_id(twin_a.dead_letter_id, 1) and not plans[0].resumed
    assert [(x.dead_letter_id, why.split(" ")[0]) for x, why in skipped] == [
        (done.dead_letter_id, "already"), (undecodable.dead_letter_id, "not")]
    merged, _ = plan_redrives([twin_a, elsewhere], statuses, to_group="n.c")
    assert [(p.target_group, len(p.letters)) for p in merged] == [("n.c", 2)]


def test_a_letter_left_redriving_is_planned_again_with_the_id_it_recorded() -> None:
    dead = letter(RouterEvent.new("MODEL_PROMOTED", {}))
    begun = LetterStatus(dead.dead_letter_id, tries=3, redriven_as="the-recorded-id")
    begun.record("redriving", T0, "cli@h")
    [plan], _ = plan_redrives([dead], statuses_of(dead, **{dead.dead_letter_id: begun}))
    assert (plan.event_id, plan.try_number, plan.resumed) == ("the-recorded-id", 3, True)


async def test_target_group_reaches_only_that_group_and_is_not_on_the_wire_when_unset(routers: Any) -> None:
    a, b = routers
    seen: dict[str, list[RouterEvent]] = {"a": [], "b": []}
    a.subscribe("MODEL_PROMOTED", seen["a"].append)
    b.subscribe("MODEL_PROMOTED", seen["b"].append)
    await a.start()
    await b.start()
    targeted = await a.publish("MODEL_PROMOTED", {"m": 1}, route_to_cross_process=False, target_group="n.b")
    everyone = await a.publish("MODEL_PROMOTED", {"m": 2}, route_to_cross_process=False)
    await until(lambda: len(seen["b"]) == 2 and len(seen["a"]) == 1)
    assert [e.event_id for e in seen["a"]] == [everyone.event_id]
    assert seen["b"][0].target_group == "n.b" and seen["b"][0].event_id == targeted.event_id
    assert "target_group" not in json.loads(encode(everyone)) and json.loads(encode(targeted))["target_group"] == "n.b"
    with pytest.raises(ValueError, match="target_group"):
        await a.publish("MODEL_PROMOTED", {}, target_group="")


async def test_publish_takes_lineage_and_a_given_id_twice_is_handled_once(routers: Any) -> None:
    a, _ = routers
    seen: list[RouterEvent] = []
    a.subscribe("MODEL_PROMOTED", seen.append)
    await a.start()
    lineage = {"event_id": "fixed-1", "parent_event_id": "p-1", "trace_id": "ab" * 16, "correlation_id": "c-1"}
    first = await a.publish("MODEL_PROMOTED", {"m": 1}, **lineage)
    await a.publish("MODEL_PROMOTED", {"m": 1}, **lineage)
    await until(lambda: len(seen) == 1)
    assert (first.event_id, first.parent_event_id, first.trace_id, first.correlation_id) == tuple(lineage.values())
    await a.publish("MODEL_PROMOTED", {"m": 3})
    await until(lambda: len(seen) == 2)  # the copy of fixed-1 came before this one: it was dropped
    assert [e.event_id for e in seen].count("fixed-1") == 1


async def test_a_redrive_runs_the_handler_once_and_an_interrupted_one_resumes_without_a_second_delivery(
        routers: Any) -> None:
    a, _ = routers
    calls: list[RouterEvent] = []

    def handler(event: RouterEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("broken until fixed")

    a.subscribe("MODEL_PROMOTED", handler)
    await a.start()
    original = await a.publish("MODEL_PROMOTED", {"m": 1}, route_to_cross_process=False)
    await until(lambda: a.get_stats()["dead_lettered"] == 1)
    [dead] = await a.dlq.list()
    store = MemoryStatusStore(unique("store"))
    statuses = statuses_of(dead)
    [plan], _ = plan_redrives([dead], statuses)
    await run_redrive(plan, a, store, statuses, by="cli@h", now=T0)
    await until(lambda: len(calls) == 2)
    assert (calls[1].event_id, calls[1].parent_event_id, calls[1].trace_id) == (
        plan.event_id, original.event_id, original.trace_id)
    status = await store.get(dead.dead_letter_id)
    assert status is not None and status.state == "redriven" and status.tries == 1 and status.redriven_by == "cli@h"
    assert [h["state"] for h in status.history] == ["pending", "redriving", "redriven"]

    # killed after the publish and before "redriven" was written: the status still says redriving
    status.record("redriving", T0, "cli@h")
    [again], _ = plan_redrives([dead], {dead.dead_letter_id: status})
    assert again.resumed and again.event_id == plan.event_id
    await run_redrive(again, a, store, {dead.dead_letter_id: status}, by="cli@h", now=T0)
    await until(lambda: a.get_stats()["duplicates_prevented"] >= 1)
    assert len(calls) == 2 and (await store.get(dead.dead_letter_id)).state == "redriven"  # type: ignore[union-attr]


class RefusingRouter:
    async def publish(self, *args: Any, **kwargs: Any) -> RouterEvent:
        raise BrokerUnavailable("the data bus is down")


async def test_a_failed_publish_leaves_the_intent_to_resume() -> None:
    dead = letter(RouterEvent.new("MODEL_PROMOTED", {}))
    statuses, store = statuses_of(dead), MemoryStatusStore(unique("store"))
    [plan], _ = plan_redrives([dead], statuses)
    with pytest.raises(BrokerUnavailable):
        await run_redrive(plan, RefusingRouter(), store, statuses, by="cli@h", now=T0)
    status = await store.get(dead.dead_letter_id)
    assert status is not None and status.state == "redriving" and status.redriven_as == plan.event_id
    assert "the data bus is down" in status.reason
    [resumed], _ = plan_redrives([dead], {dead.dead_letter_id: status})
    assert resumed.event_id == plan.event_id
