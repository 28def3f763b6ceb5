"""The contenders' clients, configured alike: raw redis-py and aiokafka, FastStream, our router.

Fairness rules kept here in one place:
- every Kafka producer (raw, ours, FastStream) has our product's settings: acks=all, idempotence,
  linger_ms=1, the same max batch size: equal durability and equal linger;
- FastStream brokers have per-message logging off (`logger=None`, what a team tuning for throughput
  does) and `apply_types=False`, and every subscriber gets `RAW_BODY` (a decoder returning the
  record's bytes: FastStream would otherwise parse the JSON), so handlers get the raw bytes: its
  transport and routing are compared, not its validation or parsing;
- our router uses the product's defaults (dedup on) except where it reads and which namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from brokers.settings import KafkaSettings
from coordination.config import RouterConfig

__all__ = [
    "KAFKA_PRODUCER",
    "RAW_BODY",
    "KafkaCommits",
    "create_topic",
    "delete_redis",
    "delete_topics",
    "faststream_missing",
    "fill_redis",
    "fs_kafka",
    "fs_redis",
    "kafka_producer",
    "redis_client",
    "router_config",
    "started",
]

_ours = KafkaSettings.from_url("kafka://127.0.0.1:9092")
KAFKA_PRODUCER: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": _ours.linger_ms,
                                  "max_batch_size": _ours.max_batch_size}


async def _raw_body(message: Any) -> bytes:
    return message.body


RAW_BODY: dict[str, Any] = {"decoder": _raw_body}  # keyword arguments of every FastStream subscriber


def faststream_missing() -> str | None:
    """None when FastStream (with its Redis and Kafka parts) can be imported, else why not."""
    for module in ("faststream", "faststream.redis", "faststream.kafka"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package that is missing or cannot be imported
            found = False
        if not found:
            return "FastStream is not installed: scripts/bench installs it, or pip install -e '.[bench]'"
    return None


def redis_client(url: str, *, blocking_pool: bool = False) -> aioredis.Redis:
    """A redis-py client. `blocking_pool`: at most 16 connections, further callers wait for one (what
    a user firing a task per command configures: the default pool opens a connection per concurrent
    call, and under a stall that storm of connects runs into its limit of 100 and fails calls)."""
    if blocking_pool:
        return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=16))
    return aioredis.Redis.from_url(url)


def kafka_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **KAFKA_PRODUCER)


class KafkaCommits:
    """Raw aiokafka commits the way a competent user keeps them off the fetch loop: one commit in
    flight at a time, in the background; offsets acknowledged meanwhile ride on the next one."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._offsets: dict[Any, int] = {}
        self._task: asyncio.Future[None] | None = None

    def add(self, batches: dict[Any, list[Any]]) -> None:
        for tp, records in batches.items():
            self._offsets[tp] = records[-1].offset + 1
        if self._task is None or self._task.done():
            if self._task is not None:
                self._task.result()  # a failed commit fails the run
            self._task = asyncio.ensure_future(self._consumer.commit(dict(self._offsets)))

    async def close(self) -> None:
        if self._task is not None:
            await self._task
        if self._offsets:
            await self._consumer.commit(dict(self._offsets))


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str] | None = None, prefix: str | None = None) -> None:
    """Delete the topics of `names` and those starting with `prefix` that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in existing if n in (names or ()) or (prefix is not None and n.startswith(prefix))]
        if wanted:
            await admin.delete_topics(wanted)
    finally:
        await admin.close()


async def delete_redis(url: str, *patterns: str) -> None:
    """Unlink every key matching the patterns (streams, dedup marks, attempt counters of a run)."""
    client = redis_client(url)
    try:
        for pattern in patterns:
            batch = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
    finally:
        await client.aclose()


async def fill_redis(url: str, stream: str, values: Iterable[bytes], faststream: bool = False,
                     chunk: int = 2000) -> None:
    """Append `values` to `stream` in pipelines of `chunk`: raw XADDs of `{"event": value}`, or FastStream's
    publish (its own record format, for a FastStream subscriber) when `faststream`."""
    if faststream:
        broker = fs_redis(url)
        await broker.connect()
        for batch in _chunks(values, chunk):
            async with broker._connection.pipeline(transaction=False) as pipe:
                for value in batch:
                    await broker.publish(value, stream=stream, pipeline=pipe)
                await pipe.execute()
        await broker.stop()
        return
    client = redis_client(url)
    try:
        for batch in _chunks(values, chunk):
            pipe = client.pipeline(transaction=False)
            for value in batch:
                pipe.xadd(stream, {b"event": value})
            await pipe.execute()
    finally:
        await client.aclose()


def _chunks(values: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(values)
    while batch := list(itertools.islice(it, size)):
        yield batch


def router_config(redis_url: str, kafka_bootstrap: str | None, namespace: str, node_id: str,
                  buses: tuple[str, ...] = ("data",), **overrides: Any) -> RouterConfig:
    """Our router with the product's defaults, reading `buses` of `namespace` in group `<node_id>.router`."""
    return RouterConfig(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap, namespace=namespace,
                        node_id=node_id, read_buses=frozenset(buses), start_position="earliest", **overrides)


def fs_redis(url: str) -> Any:
    from faststream.redis import RedisBroker

    return RedisBroker(url, logger=None, apply_types=False)


def fs_kafka(bootstrap: str) -> Any:
    from faststream.kafka import KafkaBroker

    return KafkaBroker(bootstrap, logger=None, apply_types=False, **KAFKA_PRODUCER)


@contextlib.asynccontextmanager
async def started(broker: Any) -> Any:
    """A FastStream broker connected (and its subscribers started) for the block."""
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
