"""The dedup store's protocol on the memory store, and RouterConfig.from_env (same tests run on
real Redis in tests/integration/test_router_dedup.py)."""

from __future__ import annotations

import asyncio

from brokers.dedup import MemoryDedupStore, Verdict
from coordination.config import RouterConfig
from schemas.envelope import RouterEvent
from tests.support import unique


def _store(window_s: float = 30.0, group: str = "g") -> MemoryDedupStore:
    return MemoryDedupStore(unique("mem"), "ns", group, window_s=window_s, id_ttl_s=60, lease_s=60)


async def test_id_and_content_verdicts_and_release() -> None:
    store = _store()
    first = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    again = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await store.claim(first, "data|t|None|1") is Verdict.NEW
    assert await store.claim(first, "cross|t|0|5") is Verdict.DUPLICATE_ID  # in flight elsewhere
    assert await store.claim(again, "data|t|None|2") is Verdict.DUPLICATE_CONTENT
    assert await store.claim(again, "data|t|None|2") is Verdict.DUPLICATE_ID
    other = RouterEvent.new("TRAINING_COMPLETED", {"n": 2})
    assert await store.claim(other, "data|t|None|3", content=False) is Verdict.NEW
    await store.release(first)
    assert await store.claim(first, "data|t|None|9") is Verdict.NEW


async def test_a_redelivery_of_the_same_record_takes_the_claim_over() -> None:
    store = _store()
    event = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await store.claim(event, "data|t|None|1") is Verdict.NEW
    assert await store.claim(event, "data|t|None|1") is Verdict.NEW  # its process died mid-handling
    await store.commit(event)
    assert await store.claim(event, "data|t|None|1") is Verdict.DUPLICATE_ID


async def test_fail_keeps_the_id_but_frees_the_content() -> None:
    store = _store()
    event = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await store.claim(event, "p1") is Verdict.NEW
    await store.fail(event)
    assert await store.claim(event, "p2") is Verdict.DUPLICATE_ID
    assert await store.claim(RouterEvent.new("TRAINING_COMPLETED", {"n": 1}), "p3") is Verdict.NEW


async def test_content_window_expires_and_groups_are_separate() -> None:
    store = _store(window_s=0.2)
    assert await store.claim(RouterEvent.new("MODEL_PROMOTED", {"m": 1}), "p1") is Verdict.NEW
    assert await store.claim(RouterEvent.new("MODEL_PROMOTED", {"m": 1}), "p2") is Verdict.DUPLICATE_CONTENT
    other_group = MemoryDedupStore(store._prefix, "ns", "other", window_s=30, id_ttl_s=60, lease_s=60)
    assert await other_group.claim(RouterEvent.new("MODEL_PROMOTED", {"m": 1}), "p1") is Verdict.NEW
    await asyncio.sleep(0.25)
    assert await store.claim(RouterEvent.new("MODEL_PROMOTED", {"m": 1}), "p3") is Verdict.NEW


def test_config_from_env() -> None:
    env = {"RINGRIFT_REDIS_URL": "memory://x", "RINGRIFT_KAFKA_BOOTSTRAP": "none", "RINGRIFT_NAMESPACE": "ns",
           "RINGRIFT_NODE_ID": "n1", "RINGRIFT_SERVICE_NAME": "svc", "RINGRIFT_DEDUP_WINDOW_SECONDS": "5",
           "RINGRIFT_EVENT_HANDLER_TIMEOUT": "7", "RINGRIFT_HANDLER_MAX_ATTEMPTS": "4",
           "RINGRIFT_DEDUP_EXEMPT_TYPES": "training_heartbeat, new_games"}
    c = RouterConfig.from_env(env)
    assert (c.kafka_enabled, c.group, c.consumer, c.dlq_topic) == (False, "n1.svc", "n1.svc", "ns:dlq")
    assert (c.dedup_window_s, c.handler_timeout_s, c.max_attempts) == (5.0, 7.0, 4)
    assert c.dedup_exempt_types == {"TRAINING_HEARTBEAT", "NEW_GAMES_AVAILABLE"}
    d = RouterConfig.from_env({"RINGRIFT_NODE_ID": "n2"})
    assert (d.kafka_url, d.cross_topic, d.dlq_topic, d.data_topic) == (
        "kafka://127.0.0.1:9092", "ringrift.events", "ringrift.dlq", "ringrift:data")
    assert "TRAINING_HEARTBEAT" in d.dedup_exempt_types
