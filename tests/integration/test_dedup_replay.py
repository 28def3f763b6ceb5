"""Replay epochs of the dedup store on real Redis: a replayed event passes a group's dedup once, its
copies and the events outside the range do not, and a running member's cache does not hide it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from brokers.dedup import RedisDedupStore, Verdict
from schemas.envelope import RouterEvent
from tests.support import unique

pytestmark = pytest.mark.integration


@pytest.fixture
async def stores(redis_service: str) -> AsyncIterator[tuple[RedisDedupStore, RedisDedupStore, str]]:
    """A group member's store and the operator's (`coord replay`), same namespace and group."""
    namespace = unique("dd")
    member = RedisDedupStore(redis_service, namespace, "g", window_s=30, id_ttl_s=60, lease_s=60)
    operator = RedisDedupStore(redis_service, namespace, "g", window_s=30, id_ttl_s=60, lease_s=60)
    try:
        yield member, operator, namespace
    finally:
        await member.close()
        await operator.close()


async def _handled(store: RedisDedupStore, event: RouterEvent, position: str) -> Verdict:
    verdict = await store.claim(event, position)
    if verdict is Verdict.NEW:
        await store.commit(event)
    return verdict


async def test_a_replayed_event_passes_once_among_copies_and_twins(
        stores: tuple[RedisDedupStore, RedisDedupStore, str], redis_service: str) -> None:
    member, operator, namespace = stores
    inside = RouterEvent.new("MODEL_PROMOTED", {"m": 1})
    twin = RouterEvent.new("MODEL_PROMOTED", {"m": 1})  # same content, also in the range
    outside = RouterEvent.new("MODEL_PROMOTED", {"m": 2})
    assert await _handled(member, inside, "data|s|None|1-0") is Verdict.NEW
    assert await member.claim(twin, "data|s|None|2-0") is Verdict.DUPLICATE_CONTENT
    assert await _handled(member, outside, "data|s|None|3-0") is Verdict.NEW

    assert await operator.bump_epoch([inside.event_id, twin.event_id]) == 1
    member.epoch_refresh_s = 0.05
    await asyncio.sleep(0.06)
    assert await member.claim(inside, "data|s|None|1-0") is Verdict.NEW
    assert await member.claim(inside, "cross|t|0|7") is Verdict.DUPLICATE_ID  # its copy on Kafka
    await member.commit(inside)
    assert await member.claim(twin, "data|s|None|2-0") is Verdict.DUPLICATE_CONTENT
    assert await member.claim(outside, "data|s|None|3-0") is Verdict.DUPLICATE_ID
    assert await member.claim(inside, "data|s|None|1-0") is Verdict.DUPLICATE_ID

    client = aioredis.Redis.from_url(redis_service)
    try:
        prefix = f"{namespace}:dedup:g:"
        assert await client.get(prefix + "epoch") == b"1"
        assert await client.get(f"{prefix}replay:{inside.event_id}") == b"1"
        assert await client.get(f"{prefix}e1:id:{inside.event_id}") == b"done"
        assert await client.get(f"{prefix}id:{inside.event_id}") == b"done"  # epoch 0's mark stays
    finally:
        await client.aclose()


async def test_in_flight_claims_and_dropped_replays(stores: tuple[RedisDedupStore, RedisDedupStore, str]) -> None:
    member, operator, _ = stores
    member.epoch_refresh_s = 0
    busy = RouterEvent.new("TRAINING_COMPLETED", {"n": 1})
    done = RouterEvent.new("TRAINING_COMPLETED", {"n": 2})
    assert await _handled(member, done, "p2") is Verdict.NEW
    assert await member.claim(busy, "p1") is Verdict.NEW  # being handled while the replay starts
    await operator.bump_epoch([busy.event_id])
    await member.commit(busy)  # settles the claim's epoch (0), not the replay's
    assert await _handled(member, busy, "p1") is Verdict.NEW

    await operator.bump_epoch([done.event_id])
    await operator.drop_replay([done.event_id])  # the group could not be moved after all
    assert await member.claim(done, "p2") is Verdict.DUPLICATE_ID


async def test_a_batch_of_claims_judges_each_event_as_single_claims_would(
        stores: tuple[RedisDedupStore, RedisDedupStore, str]) -> None:
    member, other, _ = stores
    first = RouterEvent.new("MODEL_PROMOTED", {"m": 10})
    twin = RouterEvent.new("MODEL_PROMOTED", {"m": 10})  # same content, another id, same batch
    done = RouterEvent.new("MODEL_PROMOTED", {"m": 11})
    in_flight = RouterEvent.new("MODEL_PROMOTED", {"m": 12})
    assert await _handled(member, done, "p0") is Verdict.NEW
    assert await other.claim(in_flight, "p-other") is Verdict.NEW  # claimed by another member, not settled
    verdicts = await member.claim_many([(first, "p1", True), (twin, "p2", True), (done, "p3", True),
                                        (in_flight, "p4", True)])
    assert verdicts == [Verdict.NEW, Verdict.DUPLICATE_CONTENT, Verdict.DUPLICATE_ID, Verdict.DUPLICATE_ID]
    await member.commit_many([first])
    assert await other.claim(first, "p9") is Verdict.DUPLICATE_ID  # the batch commit settled it
    # the same position again (its process died before the commit): taken over, not a duplicate
    lost = RouterEvent.new("MODEL_PROMOTED", {"m": 13})
    assert await member.claim_many([(lost, "p5", True)]) == [Verdict.NEW]
    assert await other.claim_many([(lost, "p5", True)]) == [Verdict.NEW]


async def test_released_claims_are_claimed_anew_and_their_content_is_free_again(
        stores: tuple[RedisDedupStore, RedisDedupStore, str]) -> None:
    member, other, _ = stores
    events = [RouterEvent.new("MODEL_PROMOTED", {"m": n}) for n in range(3)]
    assert await member.claim_many([(e, f"p{n}", True) for n, e in enumerate(events)]) == [Verdict.NEW] * 3
    await member.release_many(events[:2])  # claimed ahead, never handled: the consumer stopped
    twin = RouterEvent.new("MODEL_PROMOTED", {"m": 0})  # another id, the content of a released one
    assert await other.claim(twin, "q0") is Verdict.NEW
    assert await other.claim(events[1], "q1") is Verdict.NEW  # not a takeover: a first claim
    assert await other.claim(events[2], "q2") is Verdict.DUPLICATE_ID  # still held by the member
