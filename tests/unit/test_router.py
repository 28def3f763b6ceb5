"""The event router on memory:// buses: subscribe/publish, once per publish, stats, history,
handler failures, retries, timeouts, dead letters, sync handlers and publish_sync."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from coordination.config import RouterConfig
from coordination.event_router import NO_CONTENT_DEDUP_PREFIX, RouterEvent, UnifiedEventRouter
from tests.support import memory_router_config, until


def _config(**overrides: object) -> RouterConfig:
    return memory_router_config(**overrides)


@pytest.fixture
async def router() -> AsyncIterator[UnifiedEventRouter]:
    r = UnifiedEventRouter(_config())
    await r.start()
    yield r
    await r.stop()




async def test_a_publish_riding_three_buses_reaches_each_handler_once(router: UnifiedEventRouter) -> None:
    typed: list[RouterEvent] = []
    every: list[RouterEvent] = []
    router.subscribe("new_games", typed.append)  # a value spelling: normalised to the NAME
    router.subscribe(None, every.append)
    event = await router.publish("NEW_GAMES_AVAILABLE", {"config_key": "hex8_2p", "n": 1}, source="t")
    assert router.get_stats()["published"] == {"data": 1, "stage": 1, "cross": 1}
    await until(lambda: router.get_stats()["duplicates_prevented"] == 2 and len(typed) == len(every) == 1)
    assert [e.event_id for e in typed] == [event.event_id]
    assert [e.event_id for e in every] == [event.event_id]
    stats = router.get_stats()
    assert stats["events_routed"] == {"NEW_GAMES_AVAILABLE": 1}
    assert stats["subscriber_count"] == 1 and stats["global_subscriber_count"] == 1
    assert stats["history_size"] == 1 and router.history()[0].event_id == event.event_id


async def test_stage_bus_only_for_types_with_a_stage_mapping(router: UnifiedEventRouter) -> None:
    await router.publish("CUSTOM_EVENT", {"x": 1}, route_to_cross_process=False)
    assert router.get_stats()["published"] == {"data": 1}


async def test_async_handler_and_unsubscribe(router: UnifiedEventRouter) -> None:
    got: list[str] = []

    async def handler(event: RouterEvent) -> None:
        got.append(event.payload["n"])

    router.subscribe("TRAINING_COMPLETED", handler)
    assert router.has_subscribers("training_completed")
    await router.publish("TRAINING_COMPLETED", {"n": 1})
    await until(lambda: got == [1])
    assert router.unsubscribe("TRAINING_COMPLETED", handler)
    assert not router.has_subscribers("TRAINING_COMPLETED")
    await router.publish("TRAINING_COMPLETED", {"n": 2})
    await until(lambda: router.get_stats()["events_routed"].get("TRAINING_COMPLETED") == 2)
    assert got == [1]


async def test_same_content_under_a_new_id_is_dropped_unless_opted_out(router: UnifiedEventRouter) -> None:
    got: list[RouterEvent] = []
    router.subscribe("MODEL_PROMOTED", got.append)
    await router.publish("MODEL_PROMOTED", {"model": "m1"})
    await router.publish("MODEL_PROMOTED", {"model": "m1"})
    opted = await router.publish("MODEL_PROMOTED", {"model": "m1"}, dedup=False)
    await router.publish("MODEL_PROMOTED", {"model": "m2"})
    await until(lambda: len(got) == 3)
    await until(lambda: router.get_stats()["content_duplicates_prevented"] == 1)
    assert [e.payload["model"] for e in got] == ["m1", "m1", "m2"]
    assert opted.event_id.startswith(NO_CONTENT_DEDUP_PREFIX)


async def test_exempt_types_are_never_content_deduplicated(router: UnifiedEventRouter) -> None:
    got: list[RouterEvent] = []
    router.subscribe("TRAINING_HEARTBEAT", got.append)
    for _ in range(3):
        await router.publish("TRAINING_HEARTBEAT", {"node": "a"})
    await until(lambda: len(got) == 3)
    assert router.get_stats()["content_duplicates_prevented"] == 0


async def test_failing_handler_is_retried_then_dead_lettered_others_still_run(
        router: UnifiedEventRouter) -> None:
    calls: list[int] = []
    good: list[int] = []

    def bad(event: RouterEvent) -> None:
        calls.append(event.payload["n"])
        if event.payload["n"] == 1:
            raise RuntimeError("boom")

    router.subscribe("TRAINING_COMPLETED", bad)
    router.subscribe("TRAINING_COMPLETED", lambda e: good.append(e.payload["n"]))
    for n in (1, 2):
        await router.publish("TRAINING_COMPLETED", {"n": n})
    await until(lambda: sorted(good) == [1, 2])  # the buses run concurrently: no order across them
    await until(lambda: router.get_stats()["dead_lettered"] == 1)
    assert sorted(calls) == [1, 1, 2]  # max_attempts=2
    assert router.dlq is not None
    [letter] = await router.dlq.list(stage="handle")
    assert letter.handler.endswith("bad") and letter.exception_type == "RuntimeError"
    assert letter.attempts == 2 and letter.event is not None and letter.event.payload == {"n": 1}
    assert "boom" in letter.traceback and letter.consumer_group == "node-a.router"
    assert await router.dlq.get(letter.dead_letter_id) == letter
    stats = router.get_stats()
    assert stats["handler_errors"] == 2 and stats["dead_lettered"] == 1


async def test_hanging_handlers_time_out_sync_and_async() -> None:
    r = UnifiedEventRouter(_config(handler_timeout_s=0.2, max_attempts=1))
    release = threading.Event()

    async def hang_async(event: RouterEvent) -> None:
        await asyncio.sleep(30)

    def hang_sync(event: RouterEvent) -> None:
        release.wait(5)

    r.subscribe("TRAINING_STARTED", hang_async)
    r.subscribe("TRAINING_STARTED", hang_sync)
    await r.start()
    try:
        await r.publish("TRAINING_STARTED", {"x": 1})
        await until(lambda: r.get_stats()["handler_timeouts"] == 2)
        assert r.dlq is not None
        letters = await r.dlq.list(stage="timeout")
        assert sorted(letter.handler.rsplit(".", 1)[1] for letter in letters) == ["hang_async", "hang_sync"]
    finally:
        release.set()
        await r.stop()


async def test_sync_handlers_run_off_the_loop(router: UnifiedEventRouter) -> None:
    threads: list[str] = []
    router.subscribe("ELO_UPDATED", lambda e: threads.append(threading.current_thread().name))
    await router.publish("ELO_UPDATED", {"elo": 1})
    await until(lambda: len(threads) == 1)
    assert threads[0] != threading.current_thread().name


async def test_events_published_in_a_handler_inherit_trace_and_parent(router: UnifiedEventRouter) -> None:
    children: list[RouterEvent] = []

    async def parent_handler(event: RouterEvent) -> None:
        await router.publish("MODEL_PROMOTED", {"from": event.event_id})

    def sync_parent(event: RouterEvent) -> None:
        router.publish_sync("EVALUATION_COMPLETED", {"from": event.event_id})

    router.subscribe("TRAINING_COMPLETED", parent_handler)
    router.subscribe("TRAINING_COMPLETED", sync_parent)
    router.subscribe("MODEL_PROMOTED", children.append)
    router.subscribe("EVALUATION_COMPLETED", children.append)
    parent = await router.publish("TRAINING_COMPLETED", {"n": 1}, correlation_id="req-7")
    await until(lambda: len(children) == 2)
    for child in children:
        assert child.trace_id == parent.trace_id and child.correlation_id == "req-7"
        assert child.parent_event_id == parent.event_id


async def test_publish_sync_from_a_thread_while_the_loop_runs(router: UnifiedEventRouter) -> None:
    got: list[RouterEvent] = []
    router.subscribe("DATA_SYNC_COMPLETED", got.append)
    result: list[RouterEvent] = []
    thread = threading.Thread(target=lambda: result.append(router.publish_sync("sync_completed", {"g": 1})))
    thread.start()
    await asyncio.to_thread(thread.join, 5)
    assert isinstance(result[0], RouterEvent) and result[0].event_type == "DATA_SYNC_COMPLETED"
    await until(lambda: len(got) == 1)


def test_publish_sync_without_any_loop() -> None:
    r = UnifiedEventRouter(_config())
    try:
        event = r.publish_sync("TRAINING_COMPLETED", {"n": 1}, source="script")
        assert isinstance(event, RouterEvent)
        assert r.get_stats()["published"] == {"data": 1, "stage": 1, "cross": 1}
    finally:
        r.stop_sync()


def test_publish_sync_takes_the_lineage_options_and_refuses_unknown_ones() -> None:
    r = UnifiedEventRouter(_config())
    try:
        event = r.publish_sync("TRAINING_COMPLETED", {"n": 2}, event_id="fixed-id", parent_event_id="parent-1",
                               trace_id="t" * 32, target_group="node-a.router")
        assert (event.event_id, event.parent_event_id, event.trace_id, event.target_group) == \
            ("fixed-id", "parent-1", "t" * 32, "node-a.router")
        with pytest.raises(TypeError, match="unexpected option"):
            r.publish_sync("TRAINING_COMPLETED", {}, routing="fast")
    finally:
        r.stop_sync()


async def test_a_batch_with_duplicates_and_a_failing_handler_settles_each_delivery(router: UnifiedEventRouter) -> None:
    seen: list[int] = []

    async def handler(event: RouterEvent) -> None:
        if event.payload["n"] == 3:
            raise ValueError("three")
        seen.append(event.payload["n"])

    router.subscribe("TRAINING_COMPLETED", handler)
    for n in range(6):  # published without yielding: the data bus hands them over as one batch
        await router.publish("TRAINING_COMPLETED", {"n": n}, route_to_stage_bus=False, route_to_cross_process=False)
    await router.publish("TRAINING_COMPLETED", {"n": 0}, route_to_stage_bus=False, route_to_cross_process=False)
    await until(lambda: router.get_stats()["dead_lettered"] == 1 and len(seen) == 5)
    await asyncio.sleep(0.1)
    assert seen == [0, 1, 2, 4, 5]  # in order; the copy of n=0 (same content) dropped; n=3 dead-lettered
    assert router.get_stats()["content_duplicates_prevented"] == 1


async def test_undecodable_record_is_dead_lettered(router: UnifiedEventRouter) -> None:
    assert router._local is not None and router.dlq is not None
    await router._local.publish_raw(router.config.data_topic, b"\xffnot json")
    await until(lambda: router.get_stats()["dead_lettered"] == 1)
    [letter] = await router.dlq.list(stage="decode")
    assert letter.raw == b"\xffnot json" and letter.event is None and "not JSON" in letter.message


async def test_strict_validation_dead_letters_unknown_types() -> None:
    r = UnifiedEventRouter(_config(strict_validation=True))
    await r.start()
    try:
        with pytest.raises(ValueError):
            await r.publish("NO_SUCH_EVENT_TYPE", {})
        assert r._local is not None and r.dlq is not None
        await r._local.publish(r.config.data_topic, RouterEvent.new("NO_SUCH_EVENT_TYPE", {}))
        await until(lambda: r.get_stats()["dead_lettered"] == 1)
        assert [d.stage for d in await r.dlq.list()] == ["validate"]
    finally:
        await r.stop()


async def test_history_filters_and_limits(router: UnifiedEventRouter) -> None:
    for n in range(3):
        await router.publish("TRAINING_COMPLETED", {"n": n}, route_to_cross_process=False)
    await router.publish("MODEL_PROMOTED", {"n": 9}, route_to_cross_process=False)
    await until(lambda: router.get_stats()["history_size"] == 4)
    assert [e.payload["n"] for e in router.history(limit=2, event_type="training_completed")] == [1, 2]
    assert router.history()[-1].origin.value == "data_bus"
