"""The dedup store's protocol on the memory store, replay epochs included, and RouterConfig.from_env
(the replay cases run on real Redis in tests/integration/test_dedup_replay.py)."""

from __future__ import annotations

import asyncio

from brokers.dedup import MemoryDedupStore, Verdict
from coordination.config import RouterConfig
from schemas.envelope import RouterEvent
from tests.support import unique


def _store(window_s: float = 30.0, group: str = "g", name: str | None = None) -> MemoryDedupStore:
    return MemoryDedupStore(name or unique("mem"), "ns", group, window_s=window_s, id_ttl_s=60, lease_s=60)


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


async def _handled(store: MemoryDedupStore, event: RouterEvent, position: str) -> Verdict:
    """Claim, and commit when the claim was NEW (what the router does around its handlers)."""
    verdict = await store.claim(event, position)
    if verdict is Verdict.NEW:
        await store.commit(event)
    return verdict


async def test_a_replayed_event_passes_once_and_its_copies_are_dropped() -> None:
    store = _store()
    store.epoch_refresh_s = 0  # a member started after the replay sees its epoch at once
    inside = [RouterEvent.new("TRAINING_COMPLETED", {"n": n}) for n in range(2)]
    outside = RouterEvent.new("TRAINING_COMPLETED", {"n": 9})
    for n, event in enumerate([*inside, outside]):
        assert await _handled(store, event, f"data|t|None|{n}") is Verdict.NEW

    assert await store.bump_epoch(e.event_id for e in inside) == 1
    assert await store.claim(inside[0], "data|t|None|0") is Verdict.NEW
    assert await store.claim(inside[0], "cross|t|0|0") is Verdict.DUPLICATE_ID  # its copy on another bus
    await store.commit(inside[0])
    assert await store.claim(inside[0], "data|t|None|0") is Verdict.DUPLICATE_ID
    assert await _handled(store, inside[1], "data|t|None|1") is Verdict.NEW
    assert await store.claim(outside, "data|t|None|2") is Verdict.DUPLICATE_ID

    assert await store.bump_epoch([inside[1].event_id]) == 2  # a second replay: once more
    assert await _handled(store, inside[1], "data|t|None|1") is Verdict.NEW
    assert await store.claim(inside[0], "data|t|None|0") is Verdict.DUPLICATE_ID


async def test_content_dedup_holds_among_replayed_events() -> None:
    store = _store()
    store.epoch_refresh_s = 0
    first, twin = RouterEvent.new("MODEL_PROMOTED", {"m": 1}), RouterEvent.new("MODEL_PROMOTED", {"m": 1})
    earlier = RouterEvent.new("MODEL_PROMOTED", {"m": 1})  # same content, before the replayed range
    assert await _handled(store, earlier, "p0") is Verdict.NEW
    assert await store.claim(first, "p1") is Verdict.DUPLICATE_CONTENT
    await store.bump_epoch([first.event_id, twin.event_id])
    assert await _handled(store, first, "p1") is Verdict.NEW  # the earlier twin's mark is of epoch 0
    assert await store.claim(twin, "p2") is Verdict.DUPLICATE_CONTENT


async def test_a_running_members_settled_cache_is_emptied_by_a_replay() -> None:
    name = unique("mem")
    member, operator = _store(name=name), _store(name=name)  # a group member, and `coord replay`
    member.epoch_refresh_s = 0.05
    event = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await _handled(member, event, "p1") is Verdict.NEW
    assert await member.claim(event, "p1") is Verdict.DUPLICATE_ID  # from its cache of settled ids
    await operator.bump_epoch([event.event_id])
    await asyncio.sleep(0.06)  # coord replay waits out the refresh interval before moving the group
    assert await _handled(member, event, "p1") is Verdict.NEW
    assert await member.claim(event, "p1") is Verdict.DUPLICATE_ID


async def test_a_claim_in_flight_during_a_replay_settles_in_its_own_epoch() -> None:
    store = _store()
    store.epoch_refresh_s = 0
    event = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await store.claim(event, "p1") is Verdict.NEW  # being handled when the replay starts
    await store.bump_epoch([event.event_id])
    await store.commit(event)
    assert await _handled(store, event, "p1") is Verdict.NEW  # the replay's delivery still runs


async def test_dropped_replay_marks_and_release_in_a_replay() -> None:
    store = _store()
    store.epoch_refresh_s = 0
    event = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    assert await _handled(store, event, "p1") is Verdict.NEW
    await store.bump_epoch([event.event_id])
    await store.drop_replay([event.event_id])  # the group could not be moved: no replay after all
    assert await store.claim(event, "p1") is Verdict.DUPLICATE_ID
    await store.bump_epoch([event.event_id])
    assert await store.claim(event, "p1") is Verdict.NEW
    await store.release(event)  # a retry may run it again, in the replay's epoch
    assert await _handled(store, event, "p2") is Verdict.NEW
    assert await store.claim(event, "p3") is Verdict.DUPLICATE_ID


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


async def test_released_claims_are_claimed_anew() -> None:
    store = _store()
    events = [RouterEvent.new("MODEL_PROMOTED", {"m": n}) for n in range(3)]
    assert await store.claim_many([(e, f"p{n}", True) for n, e in enumerate(events)]) == [Verdict.NEW] * 3
    await store.release_many(events[:2])
    assert await store.claim(RouterEvent.new("MODEL_PROMOTED", {"m": 0}), "q0") is Verdict.NEW
    assert await store.claim(events[1], "q1") is Verdict.NEW
    assert await store.claim(events[2], "q2") is Verdict.DUPLICATE_ID
