"""A router stopped in the middle of its batches, again and again (a rolling restart, a daemon
restarted by its supervisor): every event is handled exactly once across the routers, and none is
dead-lettered as a handling that kept killing its process.

The router claims a batch's dedup marks before it handles the batch, and the next batch's while it
handles this one. Stopped halfway, what it handled must still be committed (else the next router
handles it again) and the claims of the rest released (else each restart counts as a crash against
those records, and after max_deliveries of them they go to the dead-letter queue unhandled)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import memory_router_config, unique, until

pytestmark = pytest.mark.integration

EVENTS = 300


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_stopping_mid_batch_loses_nothing_and_handles_nothing_twice(backend: str, redis_service: str) -> None:
    overrides: dict[str, object] = {"redis_url": redis_service, "kafka_bootstrap": None,
                                    "namespace": unique("restart")} if backend == "redis" else {}
    config = memory_router_config(read_buses=frozenset({"data"}), consume_batch=16, max_deliveries=2,
                                  consumer_name="member-a", **overrides)
    handled: Counter[int] = Counter()

    async def slow(event: RouterEvent) -> None:
        await asyncio.sleep(0.002)  # long enough for a stop to land inside a batch
        handled[event.payload["n"]] += 1  # counted once the handling is complete

    publisher = UnifiedEventRouter(config)
    for n in range(EVENTS):
        await publisher.publish("TRAINING_COMPLETED", {"n": n}, route_to_stage_bus=False)
    dead_lettered = 0
    try:
        for restart in range(5):  # more stops than max_deliveries allows crashes
            router = UnifiedEventRouter(config)
            router.subscribe("TRAINING_COMPLETED", slow)
            await router.start()
            target = min(EVENTS, (restart + 1) * 40 + 7)  # not on a batch boundary
            await until(lambda t=target: sum(handled.values()) >= t, timeout=20)
            await router.stop()
            dead_lettered += router.get_stats()["dead_lettered"]
        router = UnifiedEventRouter(config)
        router.subscribe("TRAINING_COMPLETED", slow)
        await router.start()
        try:
            await until(lambda: len(handled) == EVENTS, timeout=30)
            await asyncio.sleep(0.3)  # a second handling of anything would show now
        finally:
            await router.stop()
        dead_lettered += router.get_stats()["dead_lettered"]
    finally:
        await publisher.stop()
    twice = {n: count for n, count in handled.items() if count > 1}
    assert not twice, f"handled more than once: {twice}"
    assert sorted(handled) == list(range(EVENTS))
    assert dead_lettered == 0
