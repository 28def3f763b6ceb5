"""W6: the failure path. 1 % of the records (every hundredth) make their handler raise on every
attempt: each is retried and then dead-lettered. Throughput must stay at >= 0.9x of the same
consumer's throughput with no failures (measured alike in the same run), and nothing may be lost:
handled + dead-lettered = all.

Throughput is what the failures must not take away: the healthy records handled per second, from
the first handling to the last healthy one. The failing records' dead letters come after their
back-off (about 1.5 s with the default policy) and are waited for, counted and checked (nothing
lost), but their back-off is not charged to the stream: a consumer that waits it out before reading
on (the retry loop by hand) pays it in its healthy throughput; ours retries beside the stream. CPU is
this process's over the same span (first settled record to last healthy one), per 100k healthy
records. Our router reads a large backlog (`failure_events`); the retry loops by hand, which sleep
about 1.5 s per failing record, a small one (`by_hand_events`), each contender from its own streams.

Every contender gets the router's own policy (RouterConfig defaults: 3 attempts, exponential back-off
from 0.5 s with as much jitter, then a dead letter): our router applies it itself; the raw client
(XREADGROUP+XACK) and FastStream (a raw-bytes handler; it has no retry or dead-letter topic of its own
for Redis streams) are given the same loop by hand, dead-lettering to a stream with XADD / publish.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.events import EVENT_TYPE, envelope, head, unique
from benchmarks.measure import Summary, cpu_s
from benchmarks.procs import ChildFailed
from benchmarks.results import FASTSTREAM, RAW, Check, Row, at_least, ratio_text
from coordination.config import RouterConfig

__all__ = ["child", "run"]

CONTENDERS = [("raw", RAW, "raw: XREADGROUP+XACK, retry loop by hand"), ("router", "ours", "ours: router"),
              ("faststream", FASTSTREAM, "FastStream, retry loop by hand")]
_POLICY = RouterConfig()  # the product's defaults: max_attempts, retry_initial_s, retry_max_s


def _failing(i: int) -> bool:
    return i % 100 == 50


def run(ctx: Context) -> list[Row]:
    s, rows = ctx.settings, []
    sizes = {"router": s.failure_events, "by_hand": s.by_hand_events}
    spec = ctx.spec("W6", sizes=sizes, names={kind: {rate: {"namespace": unique("benchw6"), "fs_stream": unique(
        "benchw6fs"), "dlq": unique("benchw6dlq")} for rate in ("0", "1")} for kind in sizes})
    ctx.progress(f"W6 failure path: {sizes['router']:,} records for the router, {sizes['by_hand']:,} for the retry "
                 "loops by hand, 1 % of them failing")
    asyncio.run(_fill(spec, with_faststream=not ctx.faststream_missing))
    try:
        for who, role, label in CONTENDERS:
            row = Row("W6", "Redis, 1 % of handlings raise", label, role)
            rows.append(row)
            if who == "faststream" and ctx.faststream_missing:
                row.note = ctx.faststream_missing
                continue
            try:
                clean, failing = (ctx.launcher.run({**spec, "who": who, "failures": rate}) for rate in ("0", "1"))
            except ChildFailed as exc:
                row.error = str(exc)
                continue
            _fill_row(row, clean, failing, sizes[_kind(who)])
    finally:
        patterns = [p for by_rate in spec["names"].values() for names in by_rate.values()
                    for p in (f"{names['namespace']}:*", names["fs_stream"], f"{names['dlq']}-*")]
        asyncio.run(clients.delete_redis(s.redis_url, *patterns))
    return rows


def _kind(who: str) -> str:
    """Which backlog a contender reads: the router a large one, the retry loops by hand (which sleep
    through each failing record's back-off) a small one."""
    return "router" if who == "router" else "by_hand"


def _fill_row(row: Row, clean: dict[str, Any], failing: dict[str, Any], n: int) -> None:
    kept = failing["rate"] / clean["rate"]
    lost = n - failing["handled"] - failing["dead_letters"]
    row.value = Summary.of([failing["rate"]])
    row.cpu_per_100k = Summary.of([failing["cpu_s"] / failing["handled"] * 100_000])
    row.data = {"no_failures": clean, "one_percent": failing, "kept": kept, "lost": lost, "records": n}
    text = f"{ratio_text(kept)} of its {clean['rate']:,.0f}/s without failures"
    if row.role == "ours":
        row.checks = [at_least(kept, 0.9, text, "x"),
                      Check("target", f"{lost} lost, {failing['dead_letters']} dead letters", "0 lost", lost == 0)]
    else:
        row.note = f"{text}; {lost} lost, {failing['dead_letters']} dead letters"


async def _fill(spec: dict[str, Any], with_faststream: bool) -> None:
    for kind, by_rate in spec["names"].items():
        n = spec["sizes"][kind]
        for rate, names in by_rate.items():
            values = [envelope(i, fail=True) if rate == "1" and _failing(i) else envelope(i) for i in range(n)]
            await clients.fill_redis(spec["redis_url"], f"{names['namespace']}:data", values)
            if kind == "by_hand" and with_faststream:
                await clients.fill_redis(spec["redis_url"], names["fs_stream"], values, faststream=True)


class _Progress:
    """Handled and dead-lettered counts; the clock and this process's CPU time from the first settled
    record to the last healthy one (the `healthy`-th handled), and the clock of the last settled."""

    def __init__(self, total: int, healthy: int) -> None:
        self.total, self.healthy, self.handled, self.dead_letters = total, healthy, 0, 0
        self.first = self.last = self.last_ok = 0.0
        self.cpu_first = self.cpu_last_ok = 0.0
        self.done = asyncio.Event()

    def settled(self, ok: bool) -> None:
        now = time.perf_counter()
        if not self.first:
            self.first, self.cpu_first = now, cpu_s()
        if ok:
            self.last_ok = now
        self.handled += ok
        self.dead_letters += not ok
        if ok and self.handled == self.healthy:
            self.cpu_last_ok = cpu_s()
        if self.handled + self.dead_letters >= self.total:
            self.last = now
            self.done.set()


async def _with_policy(handle: Any, body: bytes) -> bool:
    """The router's policy by hand: True when handled, False when it must be dead-lettered."""
    for attempt in range(1, _POLICY.max_attempts + 1):
        try:
            await handle(body)
            return True
        except RuntimeError:
            if attempt < _POLICY.max_attempts:
                wait = _POLICY.retry_initial_s * 2 ** (attempt - 1) + random.uniform(0, _POLICY.retry_initial_s)
                await asyncio.sleep(min(wait, _POLICY.retry_max_s))
    return False


async def _handle_bytes(body: bytes) -> None:
    if head(body).payload.fail:
        raise RuntimeError("bench: planned failure")


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    names, n = spec["names"][_kind(spec["who"])][spec["failures"]], spec["sizes"][_kind(spec["who"])]
    failing = sum(_failing(i) for i in range(n)) if spec["failures"] == "1" else 0
    progress = _Progress(n, n - failing)
    if spec["who"] == "router":
        await _router(spec, names, progress)
    elif spec["who"] == "raw":
        await _raw(spec, names, progress)
    else:
        await _faststream(spec, names, progress)
    return {"rate": progress.handled / (progress.last_ok - progress.first), "handled": progress.handled,
            "dead_letters": progress.dead_letters, "cpu_s": progress.cpu_last_ok - progress.cpu_first,
            "all_settled_s": progress.last - progress.first}


async def _router(spec: dict[str, Any], names: dict[str, str], progress: _Progress) -> None:
    from coordination.event_router import UnifiedEventRouter

    router = UnifiedEventRouter(clients.router_config(spec["redis_url"], None, names["namespace"], unique("node")))

    async def handler(event: Any) -> None:
        if event.payload.get("fail"):
            raise RuntimeError("bench: planned failure")
        progress.settled(True)

    router.subscribe(EVENT_TYPE, handler)
    await router.start()
    while not progress.done.is_set():  # dead letters are seen in the router's counters
        await asyncio.sleep(0.02)
        for _ in range(router.get_stats()["dead_lettered"] - progress.dead_letters):
            progress.settled(False)
    await router.stop()
    client = clients.redis_client(spec["redis_url"])
    progress.dead_letters = await client.xlen(f"{names['namespace']}:dlq")  # what really reached the DLQ
    await client.aclose()


async def _raw(spec: dict[str, Any], names: dict[str, str], progress: _Progress) -> None:
    client, group, stream = clients.redis_client(spec["redis_url"]), unique("g"), f"{names['namespace']}:data"
    await client.xgroup_create(stream, group, id="0")
    while not progress.done.is_set():
        reply = await client.xreadgroup(group, "c", {stream: ">"}, count=500, block=100)
        entries = reply[0][1] if reply else []
        for _, fields in entries:
            ok = await _with_policy(_handle_bytes, fields[b"event"])
            if not ok:
                await client.xadd(f"{names['dlq']}-raw", {b"event": fields[b"event"]})
            progress.settled(ok)
        if entries:
            await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    progress.dead_letters = await client.xlen(f"{names['dlq']}-raw")
    await client.aclose()


async def _faststream(spec: dict[str, Any], names: dict[str, str], progress: _Progress) -> None:
    from faststream import AckPolicy
    from faststream.redis import StreamSub

    broker = clients.fs_redis(spec["redis_url"])

    async def handler(body: bytes) -> None:
        ok = await _with_policy(_handle_bytes, body)
        if not ok:
            await broker.publish(body, stream=f"{names['dlq']}-faststream")
        progress.settled(ok)

    broker.subscriber(stream=StreamSub(names["fs_stream"], group=unique("g"), consumer="c", max_records=500,
                                       last_id="0"), ack_policy=AckPolicy.ACK, **clients.RAW_BODY)(handler)
    async with clients.started(broker):
        await asyncio.wait_for(progress.done.wait(), 600)
    client = clients.redis_client(spec["redis_url"])
    progress.dead_letters = await client.xlen(f"{names['dlq']}-faststream")
    await client.aclose()
