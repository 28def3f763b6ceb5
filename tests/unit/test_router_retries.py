"""Retries off the consumer's path and the per-consumer handler clock, on memory:// buses.

A failing event waits out its back-off beside the stream: the events behind it are handled meanwhile,
its record is acknowledged only when its retries end, and a router stopped mid-retry hands the record
back (a restarted one handles it). One timer per consumer times every handler attempt: consecutive
handlers each get the full timeout, and an over-long one is cut at its own limit.
"""

from __future__ import annotations

import asyncio
import time

from coordination._attempt_clock import AttemptClock
from coordination.event_router import RouterEvent, UnifiedEventRouter
from coordination.handlers import HandlerTimeout, Subscriber
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
        started = time.monotonic()
        for n in range(5):
            await router.publish("TRAINING_COMPLETED", {"n": n}, **_DATA_ONLY)
        await until(lambda: sorted(n for n, _ in handled) == [1, 2, 3, 4])
        assert all(at - started < 0.9 for _, at in handled)  # not held behind the 1 s back-off of n=0
        assert await _lag(router) == 1  # n=0 is in retry: delivered, not acknowledged
        await until(lambda: [n for n, _ in handled][-1:] == [0], timeout=10)
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
    clock = AttemptClock(timeout_s=0.3)

    async def slow(event: RouterEvent) -> None:
        await asyncio.sleep(0.2)

    event = RouterEvent.new("TRAINING_COMPLETED", {})
    try:  # 0.8 s in all: a single deadline for the four would cut the third
        assert await clock.first_attempts([Subscriber(slow) for _ in range(4)], event) is None
    finally:
        clock.close()


async def test_an_attempt_over_its_limit_times_out_and_the_next_handler_runs() -> None:
    clock = AttemptClock(timeout_s=0.1)
    ran: list[str] = []

    async def fast(event: RouterEvent) -> None:
        await asyncio.sleep(0.08)
        ran.append("fast")

    async def hangs(event: RouterEvent) -> None:
        await asyncio.sleep(30)

    async def after(event: RouterEvent) -> None:
        ran.append("after")

    subscribers = [Subscriber(fast), Subscriber(hangs), Subscriber(after)]
    try:
        begun = time.monotonic()
        failures = await clock.first_attempts(subscribers, RouterEvent.new("TRAINING_COMPLETED", {}))
        took = time.monotonic() - begun
    finally:
        clock.close()
    assert failures is not None and [(s.handler, type(e)) for s, e in failures] == [(hangs, HandlerTimeout)]
    assert ran == ["fast", "after"]
    assert 0.17 <= took < 1.0  # hangs got its own 0.1 s, not what was left of fast's deadline
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the cancellation was taken back


async def test_a_handler_that_swallows_the_timeout_leaves_the_task_usable() -> None:
    clock = AttemptClock(timeout_s=0.05)

    async def stubborn(event: RouterEvent) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # a bad handler: it ignores the cancellation and returns

    try:
        await clock.first_attempts([Subscriber(stubborn)], RouterEvent.new("TRAINING_COMPLETED", {}))
    finally:
        clock.close()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0.01)  # not cancelled


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    clock = AttemptClock(timeout_s=10)

    async def hangs(event: RouterEvent) -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(clock.first_attempts([Subscriber(hangs)], RouterEvent.new("TRAINING_COMPLETED", {})))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the attempt swallowed an outside cancellation")
    finally:
        clock.close()
