"""The event router on real Redis and Kafka: several routers, duplicates, group races, dead letters.

Every test has its own namespace, so it sees only its own streams, topics, groups and dedup keys.
The second node's Redis is a private one on port 6392 (started here, stopped after the module).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import brokers
from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, require_service, unique, until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECOND_REDIS = "redis://127.0.0.1:6392/0"
KAFKA_TEST_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def _config(namespace: str, node_id: str, *, kafka: bool = False, redis_url: str = REDIS_URL,
            **overrides: object) -> RouterConfig:
    values: dict[str, object] = dict(
        redis_url=redis_url, kafka_bootstrap=KAFKA_BOOTSTRAP if kafka else None, namespace=namespace,
        node_id=node_id, start_position="earliest", handler_timeout_s=5.0, max_attempts=2,
        retry_initial_s=0.01, retry_max_s=0.05, redis_options={"block_ms": 100},
        kafka_options=KAFKA_TEST_OPTIONS)
    values.update(overrides)
    return RouterConfig(**values)  # type: ignore[arg-type]




@pytest.fixture(scope="module")
def second_redis() -> Iterator[str]:
    args = ["scripts/services", "up", "--only", "redis", "--redis-port", "6392"]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    require_service(SECOND_REDIS)
    try:
        yield SECOND_REDIS
    finally:
        subprocess.run(["scripts/services", "down", "--only", "redis", "--redis-port", "6392"], cwd=ROOT,
                       check=False, capture_output=True)


async def test_routers_on_two_nodes_get_each_event_once(kafka_service: str, second_redis: str) -> None:
    ns = unique("it")
    a = UnifiedEventRouter(_config(ns, "node-a", kafka=True))
    b = UnifiedEventRouter(_config(ns, "node-b", kafka=True))  # same Redis: another process on node A
    c = UnifiedEventRouter(_config(ns, "node-c", kafka=True, redis_url=second_redis))  # another node
    got_b: list[RouterEvent] = []
    got_c: list[RouterEvent] = []
    b.subscribe("NEW_GAMES_AVAILABLE", got_b.append)
    c.subscribe("NEW_GAMES_AVAILABLE", got_c.append)
    for router in (a, b, c):
        await router.start()
    try:
        sent = [await a.publish("NEW_GAMES_AVAILABLE", {"config_key": "hex8_2p", "n": n}) for n in range(3)]
        # b sees each on data, stage and cross: the two extra copies of each are duplicates
        await until(lambda: b.get_stats()["duplicates_prevented"] == 6 and len(got_c) == 3)
        assert sorted(e.event_id for e in got_b) == sorted(e.event_id for e in sent)
        assert sorted(e.event_id for e in got_c) == sorted(e.event_id for e in sent)
        assert {e.origin.value for e in got_c} == {"cross_process"}
        assert c.get_stats()["duplicates_prevented"] == 0
    finally:
        for router in (a, b, c):
            await router.stop()


async def test_duplicate_ids_and_content_within_and_outside_the_window(redis_service: str) -> None:
    router = UnifiedEventRouter(_config(unique("it"), "node-a", dedup_window_s=1.0))
    got: list[RouterEvent] = []
    router.subscribe("MODEL_PROMOTED", got.append)
    await router.start()
    try:
        assert router._local is not None
        topic = router.config.data_topic
        event = RouterEvent.new("MODEL_PROMOTED", {"model": "m1"})
        await router._local.publish(topic, event)
        await router._local.publish(topic, event)  # the same id twice
        await router._local.publish(topic, RouterEvent.new("MODEL_PROMOTED", {"model": "m1"}))  # same content
        await until(lambda: router.get_stats()["total_duplicates_prevented"] == 2)
        stats = router.get_stats()
        assert (stats["duplicates_prevented"], stats["content_duplicates_prevented"]) == (1, 1)
        await asyncio.sleep(1.1)  # past the content window
        later = await router.publish("MODEL_PROMOTED", {"model": "m1"})
        await until(lambda: len(got) == 2)
        assert [e.event_id for e in got] == [event.event_id, later.event_id]
    finally:
        await router.stop()


async def test_group_members_racing_on_one_duplicate_handle_it_once(redis_service: str) -> None:
    ns = unique("it")
    handled: list[str] = []
    members = [UnifiedEventRouter(_config(ns, "node-a", consumer_name=f"member-{i}")) for i in range(2)]
    for member in members:  # same node id and service name: one consumer group, one dedup scope
        member.subscribe("TRAINING_COMPLETED", lambda e: handled.append(e.event_id))
        await member.start()
    try:
        local = members[0]._local
        assert local is not None
        events = [RouterEvent.new("TRAINING_COMPLETED", {"n": n}) for n in range(20)]
        for event in events:  # every event twice, back to back: the members race on the copies
            await local.publish_batch(members[0].config.data_topic, [event, event])
        await until(lambda: sum(m.get_stats()["duplicates_prevented"] for m in members) == 20)
        await until(lambda: len(handled) == 20)
        assert sorted(handled) == sorted(e.event_id for e in events)
    finally:
        for member in members:
            await member.stop()


async def test_failing_and_hanging_handlers_are_dead_lettered(redis_service: str) -> None:
    router = UnifiedEventRouter(_config(unique("it"), "node-a", handler_timeout_s=0.3))
    seen: list[int] = []

    async def handler(event: RouterEvent) -> None:
        n = event.payload["n"]
        if n == 1:
            raise ValueError("bad payload")
        if n == 2:
            await asyncio.sleep(10)
        seen.append(n)

    router.subscribe("TRAINING_COMPLETED", handler)
    await router.start()
    try:
        for n in range(4):
            await router.publish("TRAINING_COMPLETED", {"n": n}, route_to_stage_bus=False)
        await until(lambda: sorted(seen) == [0, 3] and router.get_stats()["dead_lettered"] == 2)
        assert router.dlq is not None and router.dlq.topic == router.config.namespace + ":dlq"
        [failed] = await router.dlq.list(stage="handle")
        [hung] = await router.dlq.list(stage="timeout")
        assert failed.event is not None and failed.event.payload == {"n": 1}
        assert (failed.exception_type, failed.message, failed.attempts) == ("ValueError", "bad payload", 2)
        assert hung.event is not None and hung.event.payload == {"n": 2} and hung.exception_type == "HandlerTimeout"
        assert failed.bus == "data" and failed.consumer_group == "node-a.router" and failed.node_id == "node-a"
        stats = router.get_stats()
        assert stats["handler_errors"] == 2 and stats["handler_timeouts"] == 2
    finally:
        await router.stop()


async def test_undecodable_record_goes_to_the_kafka_dead_letter_topic(kafka_service: str) -> None:
    router = UnifiedEventRouter(_config(unique("it"), "node-a", kafka=True))
    await router.start()
    try:
        assert router._local is not None and router.dlq is not None
        await router._local.publish_raw(router.config.data_topic, b"{not json")
        await until(lambda: router.get_stats()["dead_lettered"] == 1)
        [letter] = await router.dlq.list(stage="decode")
        assert letter.raw == b"{not json" and letter.bus == "data" and router.dlq.topic.endswith(".dlq")
        assert await router.dlq.get(letter.dead_letter_id) == letter
    finally:
        await router.stop()


async def test_a_record_whose_member_died_before_handling_it_is_handled_not_dead_lettered(
        redis_service: str) -> None:
    # Crash dead letters count handlings that killed their process (tests/faults/test_router_processes.py),
    # not broker deliveries: a record merely fetched by a member that died must still be handled.
    config = _config(unique("it"), "node-a", max_deliveries=1, claim_idle_ms=100)
    router = UnifiedEventRouter(config)
    calls: list[RouterEvent] = []
    router.subscribe("TRAINING_COMPLETED", calls.append)
    async with brokers.connect(REDIS_URL, block_ms=100) as stray:
        await stray.publish(config.data_topic, RouterEvent.new("TRAINING_COMPLETED", {"n": 1}))
        stream = stray.consume(config.data_topic, config.group, "crashed-member")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        assert first.attempt == 1
    await router.start()
    try:
        await until(lambda: len(calls) == 1)
        assert calls[0].payload == {"n": 1}
        assert router.get_stats()["dead_lettered"] == 0
    finally:
        await router.stop()
