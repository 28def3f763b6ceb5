"""W4: the router's own path on the in-memory broker, against a bare `asyncio.Queue` hand-off.

Ours: `router.publish` of N events to the data bus of a `memory://` router (envelope, content hash,
encode) while the same router consumes them (decode, dedup claim and commit in the memory dedup
store, dispatch to a no-op handler, ack): events/s from the first publish to the last handling,
and this process's CPU per event. No network: what is left is the router's own code.
The floor: a producer task putting the payload dicts on an `asyncio.Queue` and a consumer task
handing each to a no-op handler. FastStream has no in-memory transport for production use; its
in-memory test client (TestRedisBroker, built on mocks) is shown for completeness only.
Targets: >= 100k events/s in one process and <= 10 µs of CPU per event.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.events import EVENT_TYPE, envelope, payload, unique
from benchmarks.measure import Sample, cpu_s
from benchmarks.results import RAW, Row, at_least, at_most
from benchmarks.throughput import Contender, collect

__all__ = ["child", "run"]

CONTENDERS = [Contender("queue", RAW, "raw: asyncio.Queue hand-off"),
              Contender("router", "ours", "ours: router (memory broker, dedup on)"),
              Contender("faststream-test", "reference", "FastStream TestRedisBroker (mock-based test client)")]


def run(ctx: Context) -> list[Row]:
    ctx.progress("W4 router path (memory broker)")
    n = ctx.settings.router_path_events
    samples = collect(ctx, CONTENDERS, lambda who: ctx.spec("W4", who=who, events=n))
    rows = samples.rows("W4", "publish -> handler, one process", "path")
    for row in rows:
        if row.role == "ours" and row.value is not None and row.cpu_per_100k is not None:
            us = row.cpu_per_100k.median * 10  # s per 100k events -> µs per event
            row.checks += [at_least(row.value.median, 100_000, f"{row.value.median:,.0f}/s", "/s"),
                           at_most(us, 10, f"{us:.1f} µs CPU/event", " µs")]
    return rows


async def _queue(n: int) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(item: Any) -> None:
        return None

    async def consume() -> None:
        for _ in range(n):
            await handler(await queue.get())
        done.set()

    consumer = asyncio.create_task(consume())
    for i in range(n):
        await queue.put(payload(i))
    await done.wait()
    await consumer


class _RouterPath:
    async def open(self) -> None:
        from coordination.event_router import UnifiedEventRouter

        self.router = UnifiedEventRouter(clients.router_config(f"memory://{unique('benchw4')}", None,
                                                               unique("benchw4"), "bench"))
        self.handled = 0
        self.target = 0
        self.done = asyncio.Event()

        async def handler(event: Any) -> None:
            self.handled += 1
            if self.handled >= self.target:
                self.done.set()

        self.router.subscribe(EVENT_TYPE, handler)
        await self.router.start()
        self.next = 0

    async def __call__(self, n: int) -> None:
        self.target, self.done = self.handled + n, asyncio.Event()
        for i in range(self.next, self.next + n):
            await self.router.publish(EVENT_TYPE, payload(i), "bench", route_to_stage_bus=False)
        self.next += n
        try:
            await asyncio.wait_for(self.done.wait(), 30 + n / 1000)
        except TimeoutError:
            raise TimeoutError(f"the router handled {self.handled - self.target + n} of {n} events") from None


class _FastStreamTest:
    async def open(self) -> None:
        from faststream.redis import StreamSub, TestRedisBroker

        broker = clients.fs_redis("redis://127.0.0.1:1/0")  # never connected: the test client replaces it

        @broker.subscriber(stream=StreamSub("benchw4", group="g", consumer="c"), **clients.RAW_BODY)
        async def handler(body: bytes) -> None:
            return None

        self.client = await TestRedisBroker(broker).__aenter__()
        self.value = envelope(0)

    async def __call__(self, n: int) -> None:
        for _ in range(n):
            await self.client.publish(self.value, stream="benchw4")


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    n, who = spec["events"], spec["who"]
    if who == "queue":
        path: Any = _queue
    else:
        path = _RouterPath() if who == "router" else _FastStreamTest()
        await path.open()
        n = n if who == "router" else max(1000, n // 20)  # the mock-based client is slow: fewer events
    await path(max(100, n // 5))  # warm-up
    started, cpu0 = time.perf_counter(), cpu_s()
    await path(n)
    return {"path": Sample(n, time.perf_counter() - started, cpu_s() - cpu0).as_dict()}
