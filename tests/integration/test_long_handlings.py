"""Through the router on Redis: a handling that runs longer than `claim_idle_ms` stays with its member;
another member of the group does not take the record over and handle it a second time. Each broker's
side of it (a live member keeps what it holds, a dead one's records are taken over) is in
tests/integration/test_broker_conformance.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import memory_router_config, unique, until

pytestmark = pytest.mark.integration


async def test_on_redis_a_handler_longer_than_claim_idle_runs_once_in_a_group_of_two(redis_service: str) -> None:
    await _long_handling_in_a_group_of_two(redis_url=redis_service, kafka_bootstrap=None, namespace=unique("long"))


async def _long_handling_in_a_group_of_two(**overrides: object) -> None:
    handled: Counter[int] = Counter()
    done = asyncio.Event()
    base = memory_router_config(claim_idle_ms=300, read_buses=frozenset({"data"}), max_attempts=1, handler_timeout_s=10,
                                **overrides)

    async def slow(event: RouterEvent) -> None:
        handled[event.payload["n"]] += 1
        await asyncio.sleep(2.0)  # more than six times claim_idle_ms
        done.set()

    members = []
    for who in ("a", "b"):
        router = UnifiedEventRouter(dataclasses.replace(base, consumer_name=f"member-{who}"))
        router.subscribe("TRAINING_COMPLETED", slow)
        await router.start()
        members.append(router)
    try:
        await members[0].publish("TRAINING_COMPLETED", {"n": 1}, route_to_stage_bus=False,
                                 route_to_cross_process=False)
        await asyncio.wait_for(done.wait(), 10)
        assert handled == Counter({1: 1}), handled  # a takeover would have started within 0.3-0.6 s
        await until(lambda: _lag_zero(members[0]), timeout=5)
    finally:
        for router in members:
            await router.stop()


async def _lag_zero(router: UnifiedEventRouter) -> bool:
    return (await router.consumer_lag())["data"] == 0
