"""Router throughput next to the raw clients, measured in one run on the same services.

    .venv/bin/python scripts/bench_router.py [--events 5000] [--publishers 64]

Prints events/s for: publishing (raw redis-py XADD pipelines / aiokafka send+await, with the same
number of concurrent publishers, against `router.publish` routed to that one bus) and consuming with
acknowledgement (raw batched XREADGROUP+XACK / getmany+commit against a router subscriber with a
no-op handler and dedup on). Records are the router's own envelope (~400 bytes). Uses the services
of RINGRIFT_REDIS_URL / RINGRIFT_KAFKA_BOOTSTRAP and a fresh namespace per run. The benchmark issue
builds the full harness (FastStream, latency, repetitions); this is the quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from coordination.config import RouterConfig
from coordination.event_router import UnifiedEventRouter
from schemas.envelope import RouterEvent, encode

REDIS_URL = os.environ.get("RINGRIFT_REDIS_URL", "redis://127.0.0.1:6379/0")
KAFKA = os.environ.get("RINGRIFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PAYLOAD = {"config_key": "hex8_2p", "games_synced": 150, "model_path": "models/canonical_hex8_2p.pth"}


def _value(i: int) -> bytes:
    return encode(RouterEvent.new("DATA_SYNC_COMPLETED", {**PAYLOAD, "i": i}))


async def _concurrently(n: int, workers: int, one: object) -> float:
    per = n // workers

    async def worker(w: int) -> None:
        for i in range(per):
            await one(w * per + i)  # type: ignore[operator]

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return per * workers / (time.perf_counter() - started)


async def raw_redis(n: int, workers: int) -> tuple[float, float]:
    client = aioredis.Redis.from_url(REDIS_URL)
    stream, values = f"bench-raw-{uuid.uuid4().hex[:6]}", [_value(i) for i in range(n)]
    started = time.perf_counter()
    for lo in range(0, n, 500):  # what a competent user writes for throughput: pipelines
        pipe = client.pipeline(transaction=False)
        for value in values[lo:lo + 500]:
            pipe.xadd(stream, {b"event": value})
        await pipe.execute()
    publish = n / (time.perf_counter() - started)
    await client.xgroup_create(stream, "g", id="0")
    started, done = time.perf_counter(), 0
    while done < n:
        reply = await client.xreadgroup("g", "c", {stream: ">"}, count=500, block=1000)
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(stream, "g", *ids)
        done += len(ids)
    consume = n / (time.perf_counter() - started)
    await client.delete(stream)
    await client.aclose()
    return publish, consume


async def raw_kafka(n: int, workers: int) -> tuple[float, float]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", enable_idempotence=True, linger_ms=1)
    await producer.start()
    values = [_value(i) for i in range(n)]

    async def send(i: int) -> None:
        await (await producer.send(topic, values[i], key=b"hex8_2p"))

    publish = await _concurrently(n, workers, send)
    await producer.stop()
    n = n // workers * workers  # what _concurrently sent
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=KAFKA, group_id="g", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    started, done = time.perf_counter(), 0
    while done < n:
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        offsets = {}
        for tp, records in batches.items():
            done += len(records)
            offsets[TopicPartition(tp.topic, tp.partition)] = records[-1].offset + 1
        if offsets:
            await consumer.commit(offsets)
    consume = n / (time.perf_counter() - started)
    await consumer.stop()
    return publish, consume


async def through_router(n: int, workers: int, bus: str) -> tuple[float, float]:
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    config = RouterConfig.from_env(environ={
        "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA, "RINGRIFT_NAMESPACE": namespace,
        "RINGRIFT_NODE_ID": "bench", "RINGRIFT_ROUTER_START": "earliest"})
    routes = {"route_to_data_bus": bus == "data", "route_to_stage_bus": False,
              "route_to_cross_process": bus == "cross"}
    publisher = UnifiedEventRouter(config)

    async def publish(i: int) -> None:
        await publisher.publish("DATA_SYNC_COMPLETED", {**PAYLOAD, "i": i}, source="bench", **routes)

    publish_rate = await _concurrently(n, workers, publish)
    await publisher.stop()
    subscriber = UnifiedEventRouter(RouterConfig.from_env(environ={
        "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA, "RINGRIFT_NAMESPACE": namespace,
        "RINGRIFT_NODE_ID": "bench-sub", "RINGRIFT_ROUTER_START": "earliest"}))
    handled = 0
    finished = asyncio.Event()
    total = n // workers * workers

    def on_event(event: RouterEvent) -> None:
        nonlocal handled
        handled += 1
        if handled >= total:
            finished.set()

    async def on_event_async(event: RouterEvent) -> None:
        on_event(event)

    subscriber.subscribe("DATA_SYNC_COMPLETED", on_event_async)
    started = time.perf_counter()
    await subscriber.start()
    await asyncio.wait_for(finished.wait(), timeout=300)
    consume_rate = total / (time.perf_counter() - started)
    await subscriber.stop()
    return publish_rate, consume_rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--publishers", type=int, default=64)
    args = parser.parse_args()
    n, w = args.events, args.publishers
    rows = []
    print("raw Redis...", file=sys.stderr)
    redis_raw = await raw_redis(n, w)
    print("router on the data bus...", file=sys.stderr)
    redis_router = await through_router(n, w, "data")
    print("raw Kafka...", file=sys.stderr)
    kafka_raw = await raw_kafka(n, w)
    print("router on the cross-process bus...", file=sys.stderr)
    kafka_router = await through_router(n, w, "cross")
    rows.append(("Redis publish (raw: pipelined XADD)", redis_raw[0], redis_router[0]))
    rows.append(("Redis consume+ack (raw: XREADGROUP+XACK)", redis_raw[1], redis_router[1]))
    rows.append(("Kafka publish (raw: send+await)", kafka_raw[0], kafka_router[0]))
    rows.append(("Kafka consume+commit (raw: getmany+commit)", kafka_raw[1], kafka_router[1]))
    print(f"{n} events, {w} concurrent publishers, ~{len(_value(0))}-byte records\n")
    print(f"{'workload':<44}{'raw ev/s':>12}{'router ev/s':>14}{'ratio':>8}")
    for name, raw, ours in rows:
        print(f"{name:<44}{raw:>12,.0f}{ours:>14,.0f}{ours / raw:>8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
