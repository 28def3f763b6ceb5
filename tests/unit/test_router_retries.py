"""Retries off the consumer's path, the consumers' handler deadlines, the spool's dead letters, on memory:// buses.

A failing event waits out its back-off beside the stream: the events behind it are handled meanwhile,
its record is acknowledged only when its retries end, and a router stopped mid-retry hands the record
back (a restarted one handles it). One timer times every handler attempt: consecutive
handlers each get the full timeout, and an over-long one is cut at its own limit.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from coordination._deadlines import Deadlines
from coordination.event_router import RouterEvent, UnifiedEventRouter
from coordination.handlers import HandlerTimeout, Subscriber, first_attempts
from coordination.spool import Spool, new_record
from schemas.envelope import encode
from tests.support import memory_router_config, until

_DATA_ONLY = {"route_to_stage_bus": False, "route_to_cross_process": False}


async def _lag(router: UnifiedEventRouter) -> int:
    return (await router.consumer_lag())["data"]


async def test_events_behind_a_failing_one_are_handled_during_its_back_off() -> None:
    router = UnifiedEventRouter(memory_router_config(max_attempts=2, retry_initial_s=1.0, retry_max_s=1.0,
                                                     read_buses=("data",)))
    handled: list[tuple[int, float]] = []
    failed_once: set[int] = set()

    async def handler(event: RouterEvent) -> None:
        n = event.payload["n"]
        if n == 0 and n not in failed_once:
            failed_once.add(n)
            raise RuntimeError("flaky")
        handled.append((n, time.monotonic()))

    router.subscribe("TRAINING_COMPLETED", handler)
    await router.start()
    try:
        for n in range(5):
            await router.publish("TRAINING_COMPLETED", {"n": n}, **_DATA_ONLY)
        await until(lambda: sorted(n for n, _ in handled) == [1, 2, 3, 4])
        assert await _lag(router) == 1  # n=0 is in retry: delivered, not acknowledged
        await until(lambda: [n for n, _ in handled][-1:] == [0], timeout=10)
        assert [n for n, _ in handled] == [1, 2, 3, 4, 0]  # in front of the stream it would be 0 first
        await until(lambda: _zero(router), timeout=5)
        stats = router.get_stats()
        assert stats["handler_errors"] == 1 and stats["dead_lettered"] == 0
    finally:
        await router.stop()


async def _zero(router: UnifiedEventRouter) -> bool:
    return await _lag(router) == 0


async def test_a_router_stopped_mid_retry_hands_the_record_back() -> None:
    config = memory_router_config(max_attempts=3, retry_initial_s=30.0, retry_max_s=30.0, read_buses=("data",),
                                  claim_idle_ms=100)
    calls: list[str] = []

    async def flaky(event: RouterEvent) -> None:
        calls.append("first" if not calls else "again")
        if len(calls) == 1:
            raise RuntimeError("fails once, then the router stops during the 30 s back-off")

    first = UnifiedEventRouter(config)
    first.subscribe("MODEL_PROMOTED", flaky)
    await first.start()
    await first.publish("MODEL_PROMOTED", {"model": "m1"}, **_DATA_ONLY)
    await until(lambda: calls == ["first"])
    await asyncio.sleep(0.05)
    begun = time.monotonic()
    await first.stop()
    assert time.monotonic() - begun < 5  # the back-off does not hold stop() up

    second = UnifiedEventRouter(config)
    second.subscribe("MODEL_PROMOTED", flaky)
    await second.start()
    try:
        await until(lambda: calls == ["first", "again"], timeout=10)  # handled anew, not a duplicate
        await until(lambda: _zero(second), timeout=5)
        assert second.get_stats()["dead_lettered"] == 0
    finally:
        await second.stop()


async def test_a_failing_event_is_dead_lettered_once_its_retries_end_and_then_acknowledged() -> None:
    router = UnifiedEventRouter(memory_router_config(max_attempts=3, retry_initial_s=0.05, retry_max_s=0.05,
                                                     read_buses=("data",)))
    attempts: list[int] = []

    async def always_fails(event: RouterEvent) -> None:
        attempts.append(event.payload["n"])
        raise ValueError("bad payload")

    router.subscribe("TRAINING_COMPLETED", always_fails)
    await router.start()
    try:
        await router.publish("TRAINING_COMPLETED", {"n": 7}, **_DATA_ONLY)
        await until(lambda: router.get_stats()["dead_lettered"] == 1)
        assert attempts == [7, 7, 7]
        assert router.dlq is not None
        [letter] = await router.dlq.list(stage="handle")
        assert letter.attempts == 3 and letter.exception_type == "ValueError"
        await until(lambda: _zero(router), timeout=5)
    finally:
        await router.stop()


async def test_consecutive_handlers_each_get_the_whole_timeout() -> None:
    async def slow(event: RouterEvent) -> None:
        await asyncio.sleep(0.2)

    # 0.8 s in all: a single deadline for the four would cut the third
    event = RouterEvent.new("TRAINING_COMPLETED", {})
    assert await first_attempts([Subscriber(slow) for _ in range(4)], event, Deadlines(0.5)) is None


async def test_an_attempt_over_its_limit_times_out_and_the_next_handler_runs() -> None:
    ran: list[str] = []

    async def fast(event: RouterEvent) -> None:
        await asyncio.sleep(0.3)
        ran.append("fast")

    async def hangs(event: RouterEvent) -> None:
        await asyncio.sleep(30)

    async def after(event: RouterEvent) -> None:
        ran.append("after")

    subscribers = [Subscriber(fast), Subscriber(hangs), Subscriber(after)]
    begun = time.monotonic()
    failures = await first_attempts(subscribers, RouterEvent.new("TRAINING_COMPLETED", {}), Deadlines(0.5))
    took = time.monotonic() - begun
    assert failures is not None and [(s.handler, type(e)) for s, e in failures] == [(hangs, HandlerTimeout)]
    assert ran == ["fast", "after"]
    assert 0.75 <= took < 2.0  # hangs got its own 0.5 s, not what was left of fast's deadline
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the cancellation was taken back


async def test_a_handler_that_swallows_the_timeout_leaves_the_task_usable() -> None:
    async def stubborn(event: RouterEvent) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # a bad handler: it ignores the cancellation and returns

    await first_attempts([Subscriber(stubborn)], RouterEvent.new("TRAINING_COMPLETED", {}), Deadlines(0.05))
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0.01)  # not cancelled


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    async def hangs(event: RouterEvent) -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(first_attempts([Subscriber(hangs)], RouterEvent.new("TRAINING_COMPLETED", {}),
                                              Deadlines(10)))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the attempts swallowed an outside cancellation")


async def test_a_spooled_record_the_broker_refuses_becomes_a_dead_letter(tmp_path: Path) -> None:
    """A record a predecessor spooled that the bus now refuses for good (here: larger than the broker
    takes) is dead-lettered by the drainer, counted, and does not block the records behind it."""
    config = memory_router_config(spool_dir=str(tmp_path / "spool"), redis_options={"max_record_bytes": 2000},
                                  read_buses=frozenset({"data"}))
    big = RouterEvent.new("TRAINING_COMPLETED", {"blob": "x" * 4000})
    small = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    spool = Spool(tmp_path / "spool")
    for event in (big, small):
        spool.append(new_record("data", config.data_topic, encode(event), None, event.event_id))
    spool.close()
    handled: list[str] = []

    async def handler(event: RouterEvent) -> None:
        handled.append(event.event_id)

    router = UnifiedEventRouter(config)
    router.subscribe("TRAINING_COMPLETED", handler)
    await router.start()
    try:
        await until(lambda: handled == [small.event_id])
        await until(lambda: router.get_stats()["dead_lettered"] == 1)
        assert router.dlq is not None
        [letter] = await router.dlq.list(stage="publish")
        assert letter.handler == "spool-drain" and letter.event is not None
        assert letter.event.event_id == big.event_id and letter.bus == "data"
        assert router.get_stats()["spool_depth"]["total"] == 0
    finally:
        await router.stop()


async def test_a_batch_whose_dedup_commit_fails_comes_back_and_is_handled_again() -> None:
    router = UnifiedEventRouter(memory_router_config(read_buses=frozenset({"data"})))
    handled: list[int] = []

    async def handler(event: RouterEvent) -> None:
        handled.append(event.payload["n"])

    router.subscribe("TRAINING_COMPLETED", handler)
    await router.connect()
    store = router._handling._dedup
    assert store is not None
    real_commit_many = store.commit_many
    failures = [RuntimeError("dedup store away")]

    async def commit_many_failing_once(events: object) -> None:
        if failures:
            raise failures.pop()
        await real_commit_many(events)  # type: ignore[arg-type]

    store.commit_many = commit_many_failing_once  # type: ignore[method-assign]
    for n in range(3):  # published before start: read as one batch
        await router.publish("TRAINING_COMPLETED", {"n": n}, **_DATA_ONLY)
    await router.start()
    try:
        await until(lambda: sorted(handled) == [0, 0, 1, 1, 2, 2])  # handled, let go, handled again
        await until(lambda: _zero(router), timeout=5)
    finally:
        await router.stop()
