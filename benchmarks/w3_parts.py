"""W3's pieces: each contender's sender and receiver, the open-loop schedule, the latency checks.

A sender is an async context yielding `send(i, due_ns)`, a coroutine function sending event i with
its scheduled time; a receiver is an async context yielding an `Inbox` its handler fills and whose
`ping(k)` sends a record through the same path (the readiness barrier).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from benchmarks import clients
from benchmarks.child import ready
from benchmarks.events import EVENT_TYPE, KEY, envelope, head, now_ns, payload, unique
from benchmarks.measure import cpu_s, percentiles
from benchmarks.results import FASTSTREAM, RAW, Check

__all__ = ["RECEIVERS", "SENDERS", "latency_checks", "names_for", "open_loop", "receive"]

Send = Callable[[int, int], Awaitable[Any]]
# backend: ((percentile, most added over raw in ms), ...), compare with FastStream's percentiles
_ADDED = {"redis": (("p50", 0.2), ("p99", 1.0)), "kafka": (("p50", None), ("p99", 2.0))}
_NOT_WORSE_THAN_FASTSTREAM = {"redis": (), "kafka": ("p50", "p99")}


def names_for() -> dict[str, str]:
    """Fresh names for one run (each contender uses the ones its library needs)."""
    return {"stream": unique("benchw3"), "topic": unique("benchw3"), "namespace": unique("benchw3ns"),
            "group": unique("g")}


def latency_checks(backend: str, ours: dict[str, float], raw: dict[str, Any] | None,
                   fast: dict[str, Any] | None) -> list[Check]:
    checks = []
    if raw and raw["latency_ms"]:
        for point, most in _ADDED[backend]:
            added = ours[point] - raw["latency_ms"][point]
            target = "" if most is None else f"<= {most:g} ms"
            checks.append(Check(RAW, f"{added:+.2f} ms {point}", target, None if most is None else added <= most))
    if fast and fast["latency_ms"]:
        for point in ("p50", "p99"):
            diff = ours[point] - fast["latency_ms"][point]
            judged = point in _NOT_WORSE_THAN_FASTSTREAM[backend]
            checks.append(Check(FASTSTREAM, f"{diff:+.2f} ms {point}", "<= +0 ms" if judged else "",
                                (diff <= 0) if judged else None))
    return checks


async def open_loop(send: Send, rate: int, n: int) -> dict[str, Any]:
    """Fire event i at start + i/rate, each send its own task; wait for all, report lateness."""
    period, start = 1e9 / rate, now_ns() + 50_000_000
    pending: set[asyncio.Future[Any]] = set()
    failures, late_max, i = 0, 0, 0

    def finished(task: asyncio.Future[Any]) -> None:
        nonlocal failures
        pending.discard(task)
        failures += task.exception() is not None

    while i < n:
        now = now_ns()
        while i < n and (due := start + int(i * period)) <= now:
            task = asyncio.ensure_future(send(i, due))
            pending.add(task)
            task.add_done_callback(finished)
            late_max, i = max(late_max, now - due), i + 1
        if i < n:
            await asyncio.sleep(max(0.0, (start + i * period - now_ns()) / 1e9))
    if pending:
        await asyncio.wait(list(pending), timeout=30)
    return {"sent": n, "failed": failures, "fired_late_max_ms": late_max / 1e6}


class Inbox:
    def __init__(self, ping: Callable[[int], Awaitable[Any]]) -> None:
        self.ping = ping
        self.samples: list[tuple[int, int]] = []  # (i, latency ns)
        self.pinged = asyncio.Event()
        self.expected = 0
        self.complete = asyncio.Event()
        self.first = self.last = 0  # when the first and the latest event arrived (now_ns)

    def on(self, i: int, stamped: int) -> None:
        now = now_ns()
        if i < 0:
            self.pinged.set()
            return
        self.samples.append((i, now - stamped))
        self.first = self.first or now
        self.last = now
        if self.expected and len(self.samples) >= self.expected:
            self.complete.set()


async def receive(inbox: Inbox, spec: dict[str, Any], n: int) -> dict[str, Any]:
    for k in range(120):
        await inbox.ping(-1 - k)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbox.pinged.wait(), 0.5)
            break
    else:
        raise RuntimeError("no ping came through within 60 s")
    inbox.expected = n
    ready()
    cpu0, started = cpu_s(), now_ns()
    # Done when all arrived, or nothing arrived for 3 s once the run's time is over (lost events).
    while not inbox.complete.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbox.complete.wait(), 0.5)
        now = now_ns()
        if (now - started) / 1e9 > spec["seconds"] and (now - max(inbox.last, started)) / 1e9 > 3:
            break
    cpu = cpu_s() - cpu0
    warm = min(n // 4, spec["rate"])
    latencies = [ns / 1e6 for i, ns in inbox.samples if i >= warm]
    span_s = (inbox.last - inbox.first) / 1e9
    return {"expected": n, "received": len(inbox.samples), "lost": n - len({i for i, _ in inbox.samples}),
            "latency_ms": percentiles(latencies), "cpu_s": cpu,
            "handled_per_s": (len(inbox.samples) - 1) / span_s if span_s > 0 else 0.0}


@contextlib.asynccontextmanager
async def _raw_redis_in(spec: dict[str, Any]) -> AsyncIterator[Inbox]:
    client, stream, group = clients.redis_client(spec["redis_url"]), spec["names"]["stream"], spec["names"]["group"]
    await client.xgroup_create(stream, group, id="$", mkstream=True)
    inbox = Inbox(lambda k: client.xadd(stream, {b"event": envelope(k)}))

    async def loop(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await client.xreadgroup(group, "c", {stream: ">"}, count=500, block=100)
            if reply:
                entries = reply[0][1]
                for _, fields in entries:
                    p = head(fields[b"event"]).payload
                    inbox.on(p.i, p.t)
                await client.xack(stream, group, *(entry_id for entry_id, _ in entries))

    async with _running(loop):
        yield inbox
    await client.aclose()


@contextlib.asynccontextmanager
async def _raw_kafka_in(spec: dict[str, Any]) -> AsyncIterator[Inbox]:
    from aiokafka import AIOKafkaConsumer

    topic = spec["names"]["topic"]
    await clients.create_topic(spec["kafka_bootstrap"], topic)
    producer = clients.kafka_producer(spec["kafka_bootstrap"])
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=spec["kafka_bootstrap"], group_id=spec["names"]["group"],
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    inbox = Inbox(lambda k: producer.send_and_wait(topic, envelope(k), key=KEY.encode()))

    async def loop(stop: asyncio.Event) -> None:
        commits = clients.KafkaCommits(consumer)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            for records in batches.values():
                for record in records:
                    p = head(record.value).payload
                    inbox.on(p.i, p.t)
            if batches:
                commits.add(batches)
        await commits.close()

    async with _running(loop):
        yield inbox
    await consumer.stop()
    await producer.stop()


def _router(spec: dict[str, Any], node: str) -> Any:
    from coordination.event_router import UnifiedEventRouter

    kafka = spec["backend"] == "kafka"
    return UnifiedEventRouter(clients.router_config(
        spec["redis_url"], spec["kafka_bootstrap"] if kafka else None, spec["names"]["namespace"], node,
        buses=("cross",) if kafka else ("data",)))


def _routes(spec: dict[str, Any]) -> dict[str, bool]:
    kafka = spec["backend"] == "kafka"
    return {"route_to_data_bus": not kafka, "route_to_stage_bus": False, "route_to_cross_process": kafka}


@contextlib.asynccontextmanager
async def _router_in(spec: dict[str, Any]) -> AsyncIterator[Inbox]:
    router = _router(spec, "benchw3in")
    inbox = Inbox(lambda k: router.publish(EVENT_TYPE, payload(k), "bench", **_routes(spec)))
    async def handler(event: Any) -> None:  # async: a sync handler would run in a worker thread
        inbox.on(event.payload["i"], event.payload.get("t", 0))

    router.subscribe(EVENT_TYPE, handler)
    await router.start()
    try:
        yield inbox
    finally:
        await router.stop()


@contextlib.asynccontextmanager
async def _faststream_in(spec: dict[str, Any]) -> AsyncIterator[Inbox]:
    from faststream import AckPolicy

    names = spec["names"]

    async def handler(body: bytes) -> None:
        p = head(body).payload
        inbox.on(p.i, p.t)

    if spec["backend"] == "redis":
        from faststream.redis import StreamSub

        broker = clients.fs_redis(spec["redis_url"])
        broker.subscriber(stream=StreamSub(names["stream"], group=names["group"], consumer="c"),
                          **clients.RAW_BODY)(handler)
        inbox = Inbox(lambda k: broker.publish(envelope(k), stream=names["stream"]))
    else:
        await clients.create_topic(spec["kafka_bootstrap"], names["topic"])
        broker = clients.fs_kafka(spec["kafka_bootstrap"])
        broker.subscriber(names["topic"], group_id=names["group"], auto_offset_reset="earliest",
                          ack_policy=AckPolicy.ACK_FIRST, **clients.RAW_BODY)(handler)  # its default: the tougher one
        inbox = Inbox(lambda k: broker.publish(envelope(k), names["topic"], key=KEY.encode()))
    async with clients.started(broker):
        yield inbox


@contextlib.asynccontextmanager
async def _running(loop: Callable[[asyncio.Event], Awaitable[None]],
                   wake: asyncio.Event | None = None) -> AsyncIterator[None]:
    """Run a loop for the block; stopped by its flag (and `wake`), not cancelled: a cancellation
    landing inside a redis-py read can be lost, leaving the task hung (see brokers/redis_streams.py)."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(loop(stop))
    try:
        yield
    finally:
        stop.set()
        if wake is not None:
            wake.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def _raw_redis_out(spec: dict[str, Any]) -> AsyncIterator[Send]:
    """One writer task sends whatever is queued as one pipeline: the lowest-latency way to XADD
    thousands a second with redis-py (a task per XADD spends more CPU than the sends themselves)."""
    client, stream = clients.redis_client(spec["redis_url"]), spec["names"]["stream"]
    queued: list[tuple[bytes, asyncio.Future[None]]] = []
    wake = asyncio.Event()

    async def writer(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wake.wait()
            wake.clear()
            while queued:
                batch = queued[:]
                del queued[:]
                pipe = client.pipeline(transaction=False)
                for value, _ in batch:
                    pipe.xadd(stream, {b"event": value})
                await pipe.execute()
                for _, future in batch:
                    future.set_result(None)

    def send(i: int, due: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        queued.append((envelope(i, t=due), future))
        wake.set()
        return future

    async with _running(writer, wake):
        yield send
    await client.aclose()


@contextlib.asynccontextmanager
async def _raw_kafka_out(spec: dict[str, Any]) -> AsyncIterator[Send]:
    producer, topic = clients.kafka_producer(spec["kafka_bootstrap"]), spec["names"]["topic"]
    await producer.start()
    yield lambda i, due: producer.send_and_wait(topic, envelope(i, t=due), key=KEY.encode())
    await producer.stop()


@contextlib.asynccontextmanager
async def _router_out(spec: dict[str, Any]) -> AsyncIterator[Send]:
    router, routes = _router(spec, "benchw3out"), _routes(spec)
    await router.connect()
    yield lambda i, due: router.publish(EVENT_TYPE, payload(i, t=due), "bench", **routes)
    await router.stop()


@contextlib.asynccontextmanager
async def _faststream_out(spec: dict[str, Any]) -> AsyncIterator[Send]:
    names = spec["names"]
    if spec["backend"] == "redis":
        broker = clients.fs_redis(spec["redis_url"])
        await broker.connect()
        yield lambda i, due: broker.publish(envelope(i, t=due), stream=names["stream"])
    else:
        broker = clients.fs_kafka(spec["kafka_bootstrap"])
        await broker.connect()
        yield lambda i, due: broker.publish(envelope(i, t=due), names["topic"], key=KEY.encode())
    await broker.stop()


SENDERS = {("redis", "raw"): _raw_redis_out, ("kafka", "raw"): _raw_kafka_out, ("redis", "router"): _router_out,
           ("kafka", "router"): _router_out, ("redis", "faststream"): _faststream_out,
           ("kafka", "faststream"): _faststream_out}
RECEIVERS = {("redis", "raw"): _raw_redis_in, ("kafka", "raw"): _raw_kafka_in, ("redis", "router"): _router_in,
             ("kafka", "router"): _router_in, ("redis", "faststream"): _faststream_in,
             ("kafka", "faststream"): _faststream_in}
