"""W1: publish throughput on Redis and Kafka, three ways: awaited per call, concurrent, batch.

- awaited per call: one publisher awaits each publish before the next;
- concurrent: 64 publisher tasks, each awaiting its own publishes. The raw Redis baseline is
  pipelined XADD with 64 commands per pipeline (the same depth in flight): what a competent user
  writes for throughput; raw Kafka is 64 tasks doing `await (await producer.send())`;
- batch: 500 records per call: raw pipelined XADD / aiokafka `create_batch` + `send_batch` (the
  client's fastest way, faster than sends then `flush()`, to the partition the key maps to); ours
  `publish_raw_batch` (the router has no batch publish); FastStream a pipeline (Redis) or
  `publish_batch` (Kafka).

Ours runs twice: the router (`router.publish`, building the envelope, routed to that one bus) and
the broker beneath it (`publish_raw` of the same bytes the raw client sends). Each timed window
follows an untimed warm-up of the same mode.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.events import EVENT_TYPE, KEY, envelopes, payload, unique
from benchmarks.measure import Sample, cpu_s
from benchmarks.results import FASTSTREAM, RAW, Row
from benchmarks.throughput import Contender, collect

__all__ = ["child", "run"]

MODES = {"awaited": "awaited per call", "concurrent": "concurrent publishers", "batch": "batch"}
CONTENDERS = {
    "redis": [Contender("raw", RAW, "raw"), Contender("broker", "ours", "ours: broker"),
              Contender("router", "ours", "ours: router"), Contender("faststream", FASTSTREAM, "FastStream")],
    "kafka": [Contender("raw", RAW, "raw"),
              Contender("broker", "ours", "ours: broker"), Contender("router", "ours", "ours: router"),
              Contender("faststream", FASTSTREAM, "FastStream")],
}
RAW_LABELS = {("redis", "awaited"): "raw: XADD", ("redis", "concurrent"): "raw: pipelined XADD, 64 deep",
              ("redis", "batch"): "raw: pipelined XADD, 500", ("kafka", "awaited"): "raw: aiokafka send+await",
              ("kafka", "concurrent"): "raw: aiokafka send+await x 64 tasks",
              ("kafka", "batch"): "raw: aiokafka create_batch+send_batch"}
# (backend, mode): (minimum ratio to raw, minimum ratio to FastStream)
TARGETS = {("redis", "concurrent"): (0.8, 5.0), ("redis", "awaited"): (0.85, None),
           ("kafka", "concurrent"): (0.8, 1.5), ("kafka", "batch"): (0.8, 1.5)}
_POOL = 1024  # distinct pre-encoded records, cycled


def run(ctx: Context) -> list[Row]:
    s, rows = ctx.settings, []
    for backend, label in (("redis", "Redis"), ("kafka", "Kafka")):
        ctx.progress(f"W1 publish, {label}")
        samples = collect(ctx, CONTENDERS[backend], lambda who, b=backend: ctx.spec(
            "W1", backend=b, who=who, publishers=s.publishers, batch=s.batch))
        for mode, title in MODES.items():
            cell = samples.rows("W1", f"{label}, {title}", mode, TARGETS.get((backend, mode), (None, None)),
                                missing={"router": "no batch publish: see ours: broker"} if mode == "batch" else {})
            cell[0].contender = RAW_LABELS[(backend, mode)]
            rows += cell
    return rows


class _Publisher(abc.ABC):
    """One contender's publish calls; `pipelined`: its concurrent mode sends pipelines, not tasks."""

    pipelined = False
    batches = True  # False: no batch publish (`many` is never called)

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.values = envelopes(_POOL)
        self.topic = unique("benchw1")

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and make the topic."""

    @abc.abstractmethod
    async def one(self, i: int) -> None:
        """Publish record i and wait for the broker's acknowledgement."""

    async def many(self, i: int, n: int) -> None:
        """Publish records i .. i+n-1 as one batch and wait for the acknowledgements."""
        raise NotImplementedError(f"{type(self).__name__} has no batch publish")

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and delete what open() made."""

    def batch_values(self, i: int, n: int) -> list[bytes]:
        return [self.values[(i + k) % _POOL] for k in range(n)]


class _RawRedis(_Publisher):
    pipelined = True

    async def open(self) -> None:
        self.client = clients.redis_client(self.spec["redis_url"])

    async def one(self, i: int) -> None:
        await self.client.xadd(self.topic, {b"event": self.values[i % _POOL]})

    async def many(self, i: int, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for value in self.batch_values(i, n):
            pipe.xadd(self.topic, {b"event": value})
        await pipe.execute()

    async def close(self) -> None:
        await self.client.delete(self.topic)
        await self.client.aclose()


class _RawKafka(_Publisher):
    async def open(self) -> None:
        await clients.create_topic(self.spec["kafka_bootstrap"], self.topic)
        self.producer = clients.kafka_producer(self.spec["kafka_bootstrap"])
        await self.producer.start()
        partitions = sorted(await self.producer.partitions_for(self.topic))
        self.partition = DefaultPartitioner()(KEY.encode(), partitions, partitions)

    async def one(self, i: int) -> None:
        await (await self.producer.send(self.topic, self.values[i % _POOL], key=KEY.encode()))

    async def many(self, i: int, n: int) -> None:
        batch = self.producer.create_batch()
        for value in self.batch_values(i, n):
            if batch.append(key=KEY.encode(), value=value, timestamp=None) is None:  # full: send, start another
                await (await self.producer.send_batch(batch, self.topic, partition=self.partition))
                batch = self.producer.create_batch()
                batch.append(key=KEY.encode(), value=value, timestamp=None)
        await (await self.producer.send_batch(batch, self.topic, partition=self.partition))

    async def close(self) -> None:
        await self.producer.stop()
        await clients.delete_topics(self.spec["kafka_bootstrap"], [self.topic])


class _Broker(_Publisher):
    async def open(self) -> None:
        import brokers

        kafka = self.spec["backend"] == "kafka"
        self.key = KEY if kafka else None
        self.broker = brokers.connect(f"kafka://{self.spec['kafka_bootstrap']}" if kafka else self.spec["redis_url"])
        await self.broker.start()
        await self.broker.ensure_topic(self.topic, partitions=3)

    async def one(self, i: int) -> None:
        await self.broker.publish_raw(self.topic, self.values[i % _POOL], self.key)

    async def many(self, i: int, n: int) -> None:
        await self.broker.publish_raw_batch(self.topic, self.batch_values(i, n), self.key)

    async def close(self) -> None:
        await self.broker.close()
        await _drop(self.spec, [self.topic])


class _Router(_Publisher):
    batches = False

    async def open(self) -> None:
        from coordination.event_router import UnifiedEventRouter

        kafka = self.spec["backend"] == "kafka"
        self.config = clients.router_config(self.spec["redis_url"], self.spec["kafka_bootstrap"] if kafka else None,
                                            unique("benchw1ns"), "bench")
        self.router = UnifiedEventRouter(self.config)
        self.topic = self.config.data_topic
        self.routes = {"route_to_data_bus": not kafka, "route_to_stage_bus": False, "route_to_cross_process": kafka}
        await self.router.connect()

    async def one(self, i: int) -> None:
        await self.router.publish(EVENT_TYPE, payload(i), "bench", **self.routes)

    async def close(self) -> None:
        await self.router.stop()
        c = self.config
        await clients.delete_redis(self.spec["redis_url"], f"{c.namespace}:*")
        if c.kafka_bootstrap:
            await clients.delete_topics(c.kafka_bootstrap, [c.cross_topic, c.dlq_topic])


class _FastStream(_Publisher):
    async def open(self) -> None:
        self.kafka = self.spec["backend"] == "kafka"
        if self.kafka:
            await clients.create_topic(self.spec["kafka_bootstrap"], self.topic)
            self.broker = clients.fs_kafka(self.spec["kafka_bootstrap"])
        else:
            self.broker = clients.fs_redis(self.spec["redis_url"])
        await self.broker.connect()

    async def one(self, i: int) -> None:
        if self.kafka:
            await self.broker.publish(self.values[i % _POOL], self.topic, key=KEY.encode())
        else:
            await self.broker.publish(self.values[i % _POOL], stream=self.topic)

    async def many(self, i: int, n: int) -> None:
        if self.kafka:
            await self.broker.publish_batch(*self.batch_values(i, n), topic=self.topic)
            return
        async with self.broker._connection.pipeline(transaction=False) as pipe:  # FastStream's documented way
            for value in self.batch_values(i, n):
                await self.broker.publish(value, stream=self.topic, pipeline=pipe)
            await pipe.execute()

    async def close(self) -> None:
        await self.broker.stop()
        await _drop(self.spec, [self.topic])


async def _drop(spec: dict[str, Any], names: list[str]) -> None:
    if spec["backend"] == "kafka":
        await clients.delete_topics(spec["kafka_bootstrap"], names)
    else:
        await clients.delete_redis(spec["redis_url"], *names)


_PUBLISHERS: dict[tuple[str, str], type[_Publisher]] = {
    ("redis", "raw"): _RawRedis, ("kafka", "raw"): _RawKafka, ("redis", "broker"): _Broker,
    ("kafka", "broker"): _Broker, ("redis", "router"): _Router, ("kafka", "router"): _Router,
    ("redis", "faststream"): _FastStream, ("kafka", "faststream"): _FastStream}


async def _drive(pub: _Publisher, mode: str, seconds: float, publishers: int, batch: int) -> Sample:
    """Publish in `mode` for `seconds`; the window closes when the last call in flight returns."""
    count = 0
    started, cpu0 = time.perf_counter(), cpu_s()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            i, count = count, count + 1
            await pub.one(i)

    if mode == "awaited":
        await worker()
    elif mode == "concurrent" and not pub.pipelined:
        await asyncio.gather(*(worker() for _ in range(publishers)))
    else:
        size = publishers if mode == "concurrent" else batch
        while time.perf_counter() < deadline:
            await pub.many(count, size)
            count += size
    return Sample(count, time.perf_counter() - started, cpu_s() - cpu0)


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    pub = _PUBLISHERS[(spec["backend"], spec["who"])](spec)
    await pub.open()
    cleaner = clients.redis_client(spec["redis_url"])
    out: dict[str, Any] = {}
    try:
        for mode in MODES:
            if mode == "batch" and not pub.batches:
                continue
            await _drive(pub, mode, spec["warmup_s"], spec["publishers"], spec["batch"])
            out[mode] = (await _drive(pub, mode, spec["window_s"], spec["publishers"], spec["batch"])).as_dict()
            if spec["backend"] == "redis":  # a fast window writes 100k+ records: not kept in the shared Redis
                await cleaner.delete(pub.topic)
    finally:
        await pub.close()
        await cleaner.aclose()
    return out
