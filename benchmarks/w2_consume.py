"""W2: consume throughput with acknowledgement, no-op handler, Redis and Kafka.

A backlog is written once per backend (the router's own bus: `<ns>:data` / `<ns>.events`); every
contender reads all of it from the start in a fresh consumer group, so they all read the same records:
- raw: batched XREADGROUP (500) + one XACK per batch / `getmany(500)` with commits in the
  background, one in flight (clients.KafkaCommits);
- ours: broker: `async for delivery in broker.consume(...)`, `await delivery.ack()` each;
- ours: router: a subscriber with a no-op handler, dedup on (the product's defaults, Kafka with its
  Redis attempt store as the router configures it);
- FastStream: a raw-bytes handler acknowledged after handling (AckPolicy.ACK: the same guarantee);
  on Redis it reads a stream in its own format (written by FastStream, same bodies), on Kafka the
  same topic. Kafka also shows FastStream's default (ACK_FIRST: auto-commit, a weaker guarantee).
The first `warmup_s` after the first record are untimed; the window ends after `window_s` or when
the backlog is drained.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.events import EVENT_TYPE, KEY, envelopes, unique
from benchmarks.measure import Meter
from benchmarks.results import FASTSTREAM, RAW, Row
from benchmarks.throughput import Contender, collect

__all__ = ["child", "run"]

TARGETS = (0.7, 1.5)  # router: >= 0.7x raw, >= 1.5x FastStream
_OURS = [Contender("broker", "ours", "ours: broker"), Contender("router", "ours", "ours: router (dedup on)")]
CONTENDERS = {
    "redis": [Contender("raw", RAW, "raw: XREADGROUP+XACK (500)"), *_OURS,
              Contender("faststream", FASTSTREAM, "FastStream (ACK)")],
    "kafka": [Contender("raw", RAW, "raw: getmany(500)+commit"), *_OURS,
              Contender("faststream", FASTSTREAM, "FastStream (ACK)"),
              Contender("faststream-auto", "reference", "FastStream default (ACK_FIRST)")],
}
_FASTSTREAM_BACKLOG = 30_000  # FastStream reads a few thousand a second: its own backlog can be smaller


def run(ctx: Context) -> list[Row]:
    s, rows = ctx.settings, []
    for backend, label in (("redis", "Redis"), ("kafka", "Kafka")):
        ns = unique("benchw2")
        ctx.progress(f"W2 consume, {label}: writing a backlog of {s.backlog:,} records")
        spec = ctx.spec("W2", backend=backend, namespace=ns, backlog=s.backlog,
                        fs_stream=unique("benchw2fs"), fs_backlog=min(s.backlog, _FASTSTREAM_BACKLOG))
        asyncio.run(_fill(spec, with_faststream=not ctx.faststream_missing))
        try:
            ctx.progress(f"W2 consume, {label}")
            samples = collect(ctx, CONTENDERS[backend], lambda who, base=spec: {**base, "who": who})
        finally:
            asyncio.run(_drop(spec))
        rows += samples.rows("W2", f"{label}, consume+ack", "consume", TARGETS)
    return rows


def _topic(spec: dict[str, Any]) -> str:
    return f"{spec['namespace']}:data" if spec["backend"] == "redis" else f"{spec['namespace']}.events"


async def _fill(spec: dict[str, Any], with_faststream: bool) -> None:
    topic, n, chunk = _topic(spec), spec["backlog"], 2000
    if spec["backend"] == "redis":
        await clients.fill_redis(spec["redis_url"], topic, _envelopes(n, chunk), chunk=chunk)
        if with_faststream:
            await clients.fill_redis(spec["redis_url"], spec["fs_stream"], _envelopes(spec["fs_backlog"], chunk),
                                     faststream=True, chunk=chunk)
        return
    await clients.create_topic(spec["kafka_bootstrap"], topic)
    producer = clients.kafka_producer(spec["kafka_bootstrap"])
    await producer.start()
    for lo in range(0, n, chunk):
        sent = [await producer.send(topic, value, key=KEY.encode()) for value in envelopes(min(chunk, n - lo), lo)]
        await asyncio.gather(*sent)
    await producer.stop()


def _envelopes(n: int, chunk: int) -> Iterator[bytes]:
    """`n` envelopes, made `chunk` at a time (a full backlog is not held in memory at once)."""
    for lo in range(0, n, chunk):
        yield from envelopes(min(chunk, n - lo), lo)


async def _drop(spec: dict[str, Any]) -> None:
    await clients.delete_redis(spec["redis_url"], f"{spec['namespace']}:*", spec["fs_stream"])
    if spec["backend"] == "kafka":
        ns = spec["namespace"]
        await clients.delete_topics(spec["kafka_bootstrap"], [f"{ns}.events", f"{ns}.dlq"])


async def _raw_redis(spec: dict[str, Any], meter: Meter) -> None:
    client, topic, group = clients.redis_client(spec["redis_url"]), _topic(spec), unique("g")
    await client.xgroup_create(topic, group, id="0")
    while not meter.done.is_set():
        reply = await client.xreadgroup(group, "c", {topic: ">"}, count=500, block=100)
        if reply:
            ids = [entry_id for entry_id, _ in reply[0][1]]
            await client.xack(topic, group, *ids)
            meter.tick(len(ids))
    await client.aclose()


async def _raw_kafka(spec: dict[str, Any], meter: Meter) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(_topic(spec), bootstrap_servers=spec["kafka_bootstrap"], group_id=unique("g"),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    commits = clients.KafkaCommits(consumer)
    while not meter.done.is_set():
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        if batches:
            commits.add(batches)
            meter.tick(sum(len(records) for records in batches.values()))
    await commits.close()
    await consumer.stop()


async def _broker(spec: dict[str, Any], meter: Meter) -> None:
    import brokers

    kafka = spec["backend"] == "kafka"
    async with brokers.connect(f"kafka://{spec['kafka_bootstrap']}" if kafka else spec["redis_url"]) as broker:
        async for delivery in broker.consume(_topic(spec), unique("g"), start="earliest"):
            await delivery.ack()
            meter.tick()
            if meter.done.is_set():
                break


async def _router(spec: dict[str, Any], meter: Meter) -> None:
    from coordination.event_router import UnifiedEventRouter

    kafka = spec["backend"] == "kafka"
    router = UnifiedEventRouter(clients.router_config(
        spec["redis_url"], spec["kafka_bootstrap"] if kafka else None, spec["namespace"], unique("node"),
        buses=("cross",) if kafka else ("data",)))

    async def noop(event: Any) -> None:
        meter.tick()

    router.subscribe(EVENT_TYPE, noop)
    await router.start()
    await meter.done.wait()
    await router.stop()


async def _faststream(spec: dict[str, Any], meter: Meter) -> None:
    from faststream import AckPolicy

    async def noop(body: bytes) -> None:
        meter.tick()

    if spec["backend"] == "redis":
        from faststream.redis import StreamSub

        broker = clients.fs_redis(spec["redis_url"])
        broker.subscriber(stream=StreamSub(spec["fs_stream"], group=unique("g"), consumer="c", max_records=500,
                                           last_id="0"), ack_policy=AckPolicy.ACK, **clients.RAW_BODY)(noop)
    else:
        broker = clients.fs_kafka(spec["kafka_bootstrap"])
        policy = AckPolicy.ACK_FIRST if spec["who"] == "faststream-auto" else AckPolicy.ACK
        broker.subscriber(_topic(spec), group_id=unique("g"), auto_offset_reset="earliest", ack_policy=policy,
                          **clients.RAW_BODY)(noop)
    async with clients.started(broker):
        await meter.done.wait()


_CONSUMERS = {("redis", "raw"): _raw_redis, ("kafka", "raw"): _raw_kafka}


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    total = spec["fs_backlog"] if spec["who"].startswith("faststream") and spec["backend"] == "redis" \
        else spec["backlog"]
    meter = Meter(spec["warmup_s"], spec["window_s"], total)
    consume = _CONSUMERS.get((spec["backend"], spec["who"])) or {
        "broker": _broker, "router": _router, "faststream": _faststream, "faststream-auto": _faststream}[spec["who"]]
    task = asyncio.create_task(consume(spec, meter))
    sample = await meter.wait(spec["window_s"] + spec["warmup_s"] + 60)
    await asyncio.wait_for(task, 30)
    return {"consume": sample.as_dict()}
