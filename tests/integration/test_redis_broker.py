"""Redis-specific behaviour: credentials, an unreachable server, a restarted member resuming its own
pending entries, entries written by hand, stream trimming."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

import brokers
from brokers import AuthenticationFailed, BrokerError, BrokerUnavailable
from brokers.base import Delivery, Record
from schemas.envelope import RouterEvent
from tests.support import unique

pytestmark = pytest.mark.integration


def _with_user(url: str, user: str, password: str) -> str:
    return url.replace("redis://", f"redis://{user}:{password}@", 1)


async def test_wrong_password_is_one_clear_error_not_a_retry_loop(redis_service: str) -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="refused the credentials"):
        async with brokers.connect(_with_user(redis_service, "ringrift", "wrong"), retry_budget_s=30):
            pass
    assert time.monotonic() - started < 5


async def test_right_acl_user_works(redis_service: str) -> None:
    async with brokers.connect(_with_user(redis_service, "ringrift", "ringrift-secret")) as broker:
        topic = unique("auth")
        await broker.ensure_topic(topic)
        assert await broker.publish(topic, RouterEvent.new("NODE_RECOVERED", {"node_id": "n1"}))


async def test_unreachable_redis_raises_broker_unavailable_within_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="still failing after 1 s"):
        async with brokers.connect("redis://127.0.0.1:1/0", retry_budget_s=1):
            pass
    assert time.monotonic() - started < 10


async def test_a_restarted_member_gets_its_own_pending_entries_first(redis_service: str) -> None:
    topic, group = unique("resume"), unique("g")
    async with brokers.connect(redis_service, block_ms=100) as broker:
        await broker.ensure_topic(topic)
        await broker.publish_batch(topic, [RouterEvent.new("TRAINING_PROGRESS", {"n": i}) for i in range(3)])
        stream = broker.consume(topic, group, consumer="node-1-trainer")
        first = [await anext(stream) for _ in range(3)]
        await first[0].ack()
        await stream.aclose()  # "crash" with two entries delivered but not acknowledged
    async with brokers.connect(redis_service, block_ms=100) as broker:
        stream = broker.consume(topic, group, consumer="node-1-trainer", claim_idle_ms=60_000)
        again = [await anext(stream) for _ in range(2)]
        await stream.aclose()
    assert [d.event.payload["n"] for d in again] == [1, 2]
    assert [d.attempt for d in again] == [2, 2]


async def _written_by_hand(redis_service: str, fields: dict[str, str]) -> tuple[Delivery, list[Record]]:
    """An entry added with a plain client, as the broker delivers it and as a replay reads it."""
    topic = unique("hand")
    client = aioredis.Redis.from_url(redis_service)
    await client.xadd(topic, fields)
    await client.aclose()
    async with brokers.connect(redis_service, block_ms=100) as broker:
        stream = broker.consume(topic, unique("g"))
        async with asyncio.timeout(10):
            delivery = await anext(stream)
        await stream.aclose()
        return delivery, [r async for r in broker.read(topic)]


async def test_an_entry_without_an_event_field_surfaces_with_its_fields(redis_service: str) -> None:
    delivery, _ = await _written_by_hand(redis_service, {"payload": "{}", "type": "X"})
    assert delivery.event is None
    assert "no 'event' field (fields: payload, type)" in delivery.error


async def test_an_entry_with_a_key_and_cloudevents_fields_written_by_hand_is_read_whole(redis_service: str) -> None:
    delivery, [record] = await _written_by_hand(redis_service, {
        "ce_specversion": "1.0", "ce_type": "training_completed", "ce_id": "ce-7", "ce_source": "trainer-3",
        "key": "hex8_2p", "event": '{"epochs": 4}'})
    assert delivery.error is None and delivery.key == "hex8_2p"
    assert (delivery.event.event_type, delivery.event.event_id, delivery.event.payload) == \
        ("TRAINING_COMPLETED", "ce-7", {"epochs": 4})
    assert dict(delivery.headers)["ce_source"] == b"trainer-3"
    assert (record.event.event_id, record.key) == ("ce-7", "hex8_2p")


async def test_a_publish_with_a_key_and_cloudevents_headers_is_consumed_whole(redis_service: str) -> None:
    topic = unique("ce_out")
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"training_completed"), ("ce_id", b"ce-9"),
               ("ce_source", b"trainer-4")]
    async with brokers.connect(redis_service, block_ms=100) as broker:
        plain, with_headers = await asyncio.gather(  # one flush: entries of 1 and of 6 fields side by side
            broker.publish_raw(topic, b'{"event_type":"NODE_RECOVERED","payload":{"n":1}}'),
            broker.publish_raw(topic, b'{"epochs": 4}', "hex8_2p", headers))
        stream = broker.consume(topic, unique("g"))
        async with asyncio.timeout(10):
            first, second = await anext(stream), await anext(stream)
        await stream.aclose()
    assert (first.record_id, first.key, first.headers, first.event.payload) == (plain, None, None, {"n": 1})
    assert (second.record_id, second.key, second.headers) == (with_headers, "hex8_2p", headers)
    assert (second.event.event_type, second.event.event_id, second.event.payload) == \
        ("TRAINING_COMPLETED", "ce-9", {"epochs": 4})


async def test_a_publish_to_a_key_that_is_not_a_stream_fails_alone(redis_service: str) -> None:
    good, bad = unique("good"), unique("not_a_stream")
    client = aioredis.Redis.from_url(redis_service)
    await client.set(bad, "a plain string")
    try:
        async with brokers.connect(redis_service) as broker:
            # published together: one flush carries both streams' entries
            results = await asyncio.gather(*(broker.publish_raw(topic, b'{"event_type":"NODE_RECOVERED"}')
                                             for topic in (good, bad, good)), return_exceptions=True)
        assert isinstance(results[1], BrokerError) and "WRONGTYPE" in str(results[1])
        assert not isinstance(results[1], BrokerUnavailable)  # not retried: it cannot get better
        assert [isinstance(r, str) for r in results] == [True, False, True]
        assert await client.xlen(good) == 2 and await client.get(bad) == b"a plain string"
    finally:
        await client.delete(good, bad)
        await client.aclose()


async def test_a_batch_larger_than_one_script_call_is_added_whole_and_in_order(redis_service: str) -> None:
    topic = unique("big_batch")
    values = [f'{{"event_type":"NODE_RECOVERED","payload":{{"n":{n},"pad":"{"x" * 900_000}"}}}}'.encode()
              for n in range(20)]  # ~18 MB: three calls of at most 8 MiB
    async with brokers.connect(redis_service) as broker:
        ids = await broker.publish_raw_batch(topic, values)
        read = [r async for r in broker.read(topic)]
    assert [r.record_id for r in read] == ids and len(set(ids)) == 20
    assert [r.event.payload["n"] for r in read] == list(range(20))


async def test_streams_are_trimmed_to_about_stream_maxlen(redis_service: str) -> None:
    topic = unique("trim")
    async with brokers.connect(redis_service, stream_maxlen=100) as broker:
        await broker.publish_batch(topic, [RouterEvent.new("TRAINING_PROGRESS", {"n": i}) for i in range(1000)])
        length = len([r async for r in broker.read(topic)])
    assert 100 <= length < 1000


async def test_entries_deleted_while_pending_are_skipped_and_settled(redis_service: str) -> None:
    topic, group = unique("deleted"), unique("g")
    async with brokers.connect(redis_service) as broker:
        ids = await broker.publish_batch(topic, [RouterEvent.new("TRAINING_PROGRESS", {"n": i}) for i in range(4)])
        first = broker.consume_batches(topic, group, "member-a", batch_size=10)
        assert [d.record_id for d in await anext(first)] == ids  # read, not acknowledged
        await first.aclose()  # type: ignore[attr-defined]
        client = aioredis.Redis.from_url(redis_service)
        try:
            await client.xdel(topic, ids[1], ids[2])  # trimmed or deleted by hand while pending
            again = broker.consume_batches(topic, group, "member-a", batch_size=10)  # the same member restarts
            redelivered = await anext(again)
            assert [d.record_id for d in redelivered] == [ids[0], ids[3]]
            for delivery in redelivered:
                await delivery.ack()
            await again.aclose()  # type: ignore[attr-defined]
            await broker.close()  # the acks are flushed
            assert (await client.xpending(topic, group))["pending"] == 0  # the deleted ones were settled too
        finally:
            await client.aclose()
