"""Kafka-specific behaviour of brokers.kafka.KafkaBroker, against the real Kafka (and Redis).

The contract every broker shares lives in test_broker_conformance.py; these tests cover what only
Kafka has: partitions, offset commits, rebalances, headers, SASL, the attempt store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from brokers import AuthenticationFailed, BrokerUnavailable, RecordTooLarge, TopicNotFound
from brokers.attempts import RedisAttemptStore
from brokers.base import Delivery
from brokers.kafka import KafkaBroker
from schemas.envelope import RouterEvent
from tests.support import KAFKA_BOOTSTRAP, KAFKA_URL, REDIS_URL, require_service, unique, until

pytestmark = pytest.mark.integration

_HOST, _, _PORT = KAFKA_BOOTSTRAP.split(",")[0].rpartition(":")
# scripts/services puts the SASL listener two ports above the plain one (9092 -> 9094)
SASL_BOOTSTRAP = os.environ.get("RINGRIFT_KAFKA_SASL_BOOTSTRAP", f"{_HOST}:{int(_PORT) + 2}")
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "retry_budget_s": 5}


@pytest.fixture(autouse=True)
def _services() -> None:
    require_service(KAFKA_URL)


@pytest.fixture
async def broker() -> AsyncIterator[KafkaBroker]:
    async with KafkaBroker(KAFKA_URL, **FAST) as b:
        yield b


@pytest.fixture
def _redis() -> None:
    require_service(REDIS_URL)


@pytest.fixture
async def store(_redis: None) -> AsyncIterator[RedisAttemptStore]:
    attempt_store = RedisAttemptStore(REDIS_URL, namespace=unique("test"))
    yield attempt_store
    await attempt_store.close()


def _event(n: int) -> RouterEvent:
    return RouterEvent.new("TRAINING_COMPLETED", {"n": n}, source="kafka-test")


async def _topic(broker: KafkaBroker, partitions: int = 1) -> str:
    name = unique("kafka-test")
    await broker.ensure_topic(name, partitions)
    return name


async def _take(broker: KafkaBroker, topic: str, group: str, count: int, *, ack: bool = True,
                quiet_s: float = 0.0, **options: object) -> list[Delivery]:
    """`count` deliveries as one member of `group`; with `quiet_s`, also wait that long for extras."""
    got: list[Delivery] = []
    async with contextlib.aclosing(broker.consume(topic, group, **options)) as stream:  # type: ignore[arg-type]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                async for delivery in stream:
                    got.append(delivery)
                    if ack:
                        await delivery.ack()
                    if len(got) == count:
                        if not quiet_s:
                            break
                        async with asyncio.timeout(quiet_s):  # a TimeoutError here is success
                            async for extra in stream:
                                got.append(extra)
    return got


async def _produce_raw(value: bytes, topic: str, headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()


async def test_publish_returns_partition_and_offset_and_the_record_arrives(broker: KafkaBroker) -> None:
    topic = await _topic(broker, partitions=2)
    sent = [_event(i) for i in range(3)]
    ids = [await broker.publish(topic, event, key="same-key") for event in sent]
    batch_ids = await broker.publish_batch(topic, [_event(3), _event(4)], key="same-key")
    partition = int(ids[0].split(":")[0])
    assert ids + batch_ids == [f"{partition}:{offset}" for offset in range(5)]  # one key, one partition
    got = await _take(broker, topic, unique("g"), 5)
    assert [d.event for d in got[:3]] == sent
    assert [d.record_id for d in got] == ids + batch_ids
    first = got[0]
    assert (first.key, first.partition, first.attempt, first.topic) == ("same-key", partition, 1, topic)
    assert abs(first.timestamp - time.time()) < 60


async def test_only_contiguous_acks_are_committed(broker: KafkaBroker) -> None:
    topic, group = await _topic(broker), unique("g")
    await broker.publish_batch(topic, [_event(i) for i in range(5)])
    stream = broker.consume(topic, group)
    first = [await anext(stream) for _ in range(5)]
    for index in (3, 0, 1):  # out of order, with a gap at offset 2
        await first[index].ack()
    await stream.aclose()
    again = await _take(broker, topic, group, 3, quiet_s=1.0)
    assert [d.record_id for d in again] == ["0:2", "0:3", "0:4"]


async def test_two_members_split_the_partitions_nothing_lost_or_doubled(broker: KafkaBroker) -> None:
    topic, group = await _topic(broker, partitions=2), unique("g")
    seen: dict[str, list[str]] = {"a": [], "b": []}
    all_seen = asyncio.Event()

    async def member(name: str) -> None:
        async with contextlib.aclosing(broker.consume(topic, group, name, batch_size=10)) as stream:
            async for delivery in stream:
                seen[name].append(delivery.record_id)
                await delivery.ack()
                if len(seen["a"]) + len(seen["b"]) >= 200:
                    all_seen.set()

    tasks = [asyncio.create_task(member(name)) for name in seen]
    try:
        await asyncio.sleep(3)  # both join before the records exist, so no rebalance moves them
        await asyncio.gather(*(broker.publish(topic, _event(i), key=f"k{i}") for i in range(200)))
        await asyncio.wait_for(all_seen.wait(), 20)
        await asyncio.sleep(0.3)  # anything doubled would show up now
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    everything = seen["a"] + seen["b"]
    assert len(everything) == len(set(everything)) == 200
    assert seen["a"] and seen["b"]
    assert {r.split(":")[0] for r in seen["a"]}.isdisjoint({r.split(":")[0] for r in seen["b"]})


async def test_a_dead_members_deliveries_go_to_the_other_with_attempts_from_redis(
        store: RedisAttemptStore) -> None:
    async with KafkaBroker(KAFKA_URL, attempt_store=store, **FAST) as broker:
        assert broker.capabilities.attempt_counts
        topic, group = await _topic(broker), unique("g")
        await broker.publish_batch(topic, [_event(i) for i in range(3)])
        held: list[Delivery] = []
        holding = asyncio.Event()

        async def doomed() -> None:
            async for delivery in broker.consume(topic, group, "doomed"):
                held.append(delivery)  # never acked
                if len(held) == 3:
                    holding.set()
                    await asyncio.Event().wait()  # stuck in a handler until it dies

        victim = asyncio.create_task(doomed())
        await asyncio.wait_for(holding.wait(), 20)
        survivor = asyncio.create_task(_take(broker, topic, group, 3, consumer="survivor"))
        await asyncio.sleep(1)
        victim.cancel()
        got = await survivor
    # (the doomed member may have been given the partition again when the survivor joined and
    # delivered the records a second time before it died: attempts go on counting)
    assert [d.attempt for d in held[:3]] == [1, 1, 1]
    assert sorted(d.event.payload["n"] for d in got) == [0, 1, 2]
    assert all(d.attempt >= 2 for d in got), [d.attempt for d in got]
    client = aioredis.from_url(REDIS_URL)
    try:  # acked records leave no counters behind
        assert await client.keys(f"{store._prefix}{group}:*") == []
    finally:
        await client.aclose()


async def test_nack_redelivers_before_later_records_with_attempt_plus_one(broker: KafkaBroker) -> None:
    topic = await _topic(broker)
    await broker.publish_batch(topic, [_event(0), _event(1)])
    order: list[tuple[str, int]] = []
    async with contextlib.aclosing(broker.consume(topic, unique("g"))) as stream:
        async for delivery in stream:
            order.append((delivery.record_id, delivery.attempt))
            if len(order) < 3 and delivery.record_id == "0:0":
                await delivery.nack()
            else:
                await delivery.ack()
            if delivery.record_id == "0:1":
                break
    assert order == [("0:0", 1), ("0:0", 2), ("0:0", 3), ("0:1", 1)]


async def test_read_by_time_merges_partitions_and_by_id_stays_in_one(broker: KafkaBroker) -> None:
    topic = await _topic(broker, partitions=2)
    early = [await broker.publish(topic, _event(i), key=f"k{i}") for i in range(4)]
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    late = [await broker.publish(topic, _event(i), key=f"k{i}") for i in range(4, 8)]
    after = [r async for r in broker.read(topic, since=middle)]
    before = [r async for r in broker.read(topic, until=middle)]
    assert [r.event.payload["n"] for r in after] == [4, 5, 6, 7]
    assert [r.record_id for r in after] == late
    assert [r.event.payload["n"] for r in before] == [0, 1, 2, 3]
    assert [r.record_id for r in before] == early
    assert [r.key for r in before] == ["k0", "k1", "k2", "k3"]
    partition = late[0].split(":")[0]
    same = [i for i in early + late if i.split(":")[0] == partition]
    by_id = [r.record_id async for r in broker.read(topic, start_id=same[1])]
    assert by_id == same[1:]
    ranged = [r.record_id async for r in broker.read(topic, start_id=same[0], end_id=same[1])]
    assert ranged == same[:2]
    assert len([r async for r in broker.read(topic, limit=3)]) == 3


async def test_a_binary_mode_cloudevent_is_decoded_from_headers(broker: KafkaBroker) -> None:
    topic = await _topic(broker)
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"training_completed"),
               ("ce_id", b"ce-42"), ("ce_source", b"/java/trainer")]
    await _produce_raw(b'{"config_key": "hex8_2p"}', topic, headers)
    [got] = await _take(broker, topic, unique("g"), 1)
    assert got.error is None
    assert (got.event.event_type, got.event.event_id, got.event.source) == \
        ("TRAINING_COMPLETED", "ce-42", "/java/trainer")
    assert got.event.payload == {"config_key": "hex8_2p"}
    assert ("ce_id", b"ce-42") in list(got.headers)


async def test_an_undecodable_record_surfaces_with_its_reason(broker: KafkaBroker) -> None:
    topic = await _topic(broker)
    await _produce_raw(b"\x00\x01 binary junk", topic)
    [got] = await _take(broker, topic, unique("g"), 1)
    assert got.event is None and got.raw == b"\x00\x01 binary junk" and "not JSON" in got.error
    [record] = [r async for r in broker.read(topic)]
    assert record.event is None and record.record_id == "0:0" and "not JSON" in record.error


async def test_size_limits_ours_and_the_brokers_raise_record_too_large() -> None:
    async with KafkaBroker(KAFKA_URL, max_record_bytes=1000, **FAST) as small:
        topic = await _topic(small)
        with pytest.raises(RecordTooLarge, match="exceeds the limit of 1000 bytes"):
            await small.publish_raw(topic, b"x" * 2000)
    async with KafkaBroker(KAFKA_URL, max_record_bytes=4 * 1024 * 1024, **FAST) as big:
        with pytest.raises(RecordTooLarge, match="refused by Kafka"):  # message.max.bytes is ~1 MiB
            await big.publish_raw(topic, b"y" * (2 * 1024 * 1024))


async def test_publishing_to_a_missing_topic_raises_topic_not_found(broker: KafkaBroker) -> None:
    started = time.monotonic()
    with pytest.raises(TopicNotFound):
        await broker.publish_raw(unique("missing"), b"{}")
    with pytest.raises(TopicNotFound):
        await anext(broker.consume(unique("missing"), unique("g")))
    assert time.monotonic() - started < 5


async def test_sasl_wrong_password_fails_at_once_and_the_right_one_works() -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="PLAIN user 'ringrift'"):
        await KafkaBroker(f"kafka://ringrift:wrong@{SASL_BOOTSTRAP}", retry_budget_s=10).start()
    assert time.monotonic() - started < 3  # no retry loop over a 10 s budget
    async with KafkaBroker(f"kafka://ringrift:ringrift-secret@{SASL_BOOTSTRAP}", **FAST) as broker:
        topic = await _topic(broker)
        record_id = await broker.publish(topic, _event(1))
        assert [r.record_id async for r in broker.read(topic)] == [record_id]


async def test_an_unreachable_broker_raises_broker_unavailable_within_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="still failing after 1 s"):
        await KafkaBroker("kafka://127.0.0.1:1", retry_budget_s=1).start()
    assert time.monotonic() - started < 5


async def test_close_ends_open_consumers(broker: KafkaBroker) -> None:
    topic = await _topic(broker)

    async def drain() -> None:
        async for _ in broker.consume(topic, unique("g")):
            pass

    task = asyncio.create_task(drain())
    await asyncio.sleep(1)
    await broker.close()
    await asyncio.wait_for(task, 5)
    await broker.close()  # idempotent


async def test_ensure_topic_compacted_sets_the_cleanup_policy(broker: KafkaBroker) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    compacted, plain = unique("compacted"), unique("plain")
    await broker.ensure_topic(compacted, compacted=True)
    await broker.ensure_topic(plain)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, compacted),
                                                  ConfigResource(ConfigResourceType.TOPIC, plain)])
    finally:
        await admin.close()
    policies = {resource[3]: dict((c[0], c[1]) for c in resource[4])["cleanup.policy"]
                for response in described for resource in response.resources}
    assert policies == {compacted: "compact", plain: "delete"}


async def test_acks_are_committed_while_the_member_runs(broker: KafkaBroker) -> None:
    topic, group = await _topic(broker), unique("g")
    await broker.publish_batch(topic, [_event(i) for i in range(50)])
    async with contextlib.aclosing(broker.consume(topic, group)) as stream:
        for _ in range(50):
            await (await anext(stream)).ack()

        async def committed() -> bool:  # asked while the member is still in the group
            return not (await broker.group_lag(topic, group)).behind

        await until(committed, 10, "acks committed", interval=0.1)


async def test_a_batch_larger_than_a_producer_batch_keeps_its_order_and_ids(broker: KafkaBroker) -> None:
    topic = await _topic(broker, partitions=3)
    values = [f'{{"n": {i}, "pad": "{"x" * 300}"}}'.encode() for i in range(2000)]  # several producer batches
    ids = await broker.publish_raw_batch(topic, values)
    partition = ids[0].split(":")[0]  # without a key the whole batch goes to one partition
    assert ids == [f"{partition}:{offset}" for offset in range(2000)]
    assert [r.raw async for r in broker.read(topic)] == values
    keyed = await broker.publish_raw_batch(topic, values[:3], key="k")
    assert keyed[0].split(":")[0] == (await broker.publish_raw(topic, b"{}", key="k")).split(":")[0]


async def test_the_attempt_store_counts_redeliveries_only_and_forgets_on_rewind(
        store: RedisAttemptStore) -> None:
    first = await store.count("g", [("t:0", 0), ("t:0", 1), ("t:1", 0)])
    again = await store.count("g", [("t:1", 0), ("t:0", 1), ("t:0", 2)])
    assert (first, again) == ([1, 1, 1], [2, 2, 1])
    assert await store.count("g", [("t:0", 1)]) == [3]
    assert await store.count("other-group", [("t:0", 1)]) == [1]
    await store.clear_many("g", [("t:0", 1)])
    assert await store.count("g", [("t:0", 1)]) == [2]  # still handed out before: counted afresh from 2
    await store.forget("g", ["t:0", "t:1"])
    assert await store.count("g", [("t:0", 0), ("t:0", 1), ("t:1", 0)]) == [1, 1, 1]


async def test_the_attempt_store_counts_large_offsets_and_a_big_batch_in_order(store: RedisAttemptStore) -> None:
    big = 5_000_000_000  # past 32 bits: a long-lived partition
    batch = [("t:0", big + n) for n in range(500)]
    assert await store.count("g", batch) == [1] * 500
    again = [("t:1", 7), ("t:0", big + 499), ("t:0", big + 500), ("t:0", big + 3)]
    assert await store.count("g", again) == [1, 2, 1, 2]
    await store.clear_many("g", [("t:0", big + 3)])  # acked: its counter is gone
    assert await store.count("g", [("t:0", big + 3), ("t:0", big + 499)]) == [2, 3]


async def test_a_rewound_range_comes_back_with_attempt_one(store: RedisAttemptStore) -> None:
    async with KafkaBroker(KAFKA_URL, attempt_store=store, **FAST) as broker:
        topic, group = await _topic(broker), unique("g")
        since = datetime.now(UTC)
        await broker.publish_batch(topic, [_event(i) for i in range(3)])
        assert [d.attempt for d in await _take(broker, topic, group, 3)] == [1, 1, 1]
        deadline = time.monotonic() + 20
        while (await broker.group_lag(topic, group)).members:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await broker.rewind_group(topic, group, since=since)
        assert [d.attempt for d in await _take(broker, topic, group, 3)] == [1, 1, 1]
