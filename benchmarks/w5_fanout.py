"""W5: fan-out. One producer's backlog of 20 event types, read by 4 consumer groups at once (4
processes, two per core), each event handed to H no-op handlers in every group.

The producer writes the backlog on the Redis data bus before the groups start (it is not what is
measured). Our router runs with H = 1, 10 and 20 handlers, each subscribed to all 20 types; the raw
client (XREADGROUP+XACK, decoding only the type with msgspec, a dict from type to handlers) and
FastStream (a raw-bytes subscriber per group whose handler does the same dispatch: FastStream hands
an event to one handler per subscriber) run with H = 10. Figures are per group (median and range
of the 4) and CPU per 100k events, over a window of `window_s` after `warmup_s` (or until the
backlog is drained, which takes the fastest consumer longer than the warm-up). The target: our
dispatch cost (CPU per event) grows by at most 10 % from 1 to 20 handlers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.events import FANOUT_TYPES, envelopes, head, unique
from benchmarks.measure import Meter, Sample, Summary
from benchmarks.procs import ChildFailed
from benchmarks.results import FASTSTREAM, RAW, Row, at_most, ratio_check

__all__ = ["child", "run"]

GROUPS = 4
_LABELS = {"raw": ("raw: XREADGROUP+XACK, dict dispatch", RAW), "router": ("ours: router", "ours"),
           "faststream": ("FastStream, dispatch in its handler", FASTSTREAM)}


def run(ctx: Context) -> list[Row]:
    s = ctx.settings
    ns = unique("benchw5")
    spec = ctx.spec("W5", namespace=ns, events=s.fanout_events, fs_stream=unique("benchw5fs"))
    ctx.progress(f"W5 fan-out: a backlog of {s.fanout_events:,} records of {len(FANOUT_TYPES)} types")
    asyncio.run(_fill(spec, with_faststream=not ctx.faststream_missing))
    runs = [("router", h) for h in s.fanout_handlers] + [("raw", 10), ("faststream", 10)]
    results: dict[tuple[str, int], list[Sample] | str] = {}
    try:
        for who, handlers in runs:
            if who == "faststream" and ctx.faststream_missing:
                continue
            ctx.progress(f"W5 fan-out: {who}, {handlers} handler(s), {GROUPS} groups")
            children = [ctx.launcher.start({**spec, "who": who, "handlers": handlers}, slot=g % 2)
                        for g in range(GROUPS)]
            try:
                results[(who, handlers)] = [Sample(**c.result(ctx.settings.child_timeout_s)["fanout"])
                                            for c in children]
            except ChildFailed as exc:
                results[(who, handlers)] = str(exc)
            finally:
                for c in children:
                    c.kill()
    finally:
        asyncio.run(clients.delete_redis(s.redis_url, f"{ns}:*", spec["fs_stream"]))
    return _rows(ctx, runs, results)


def _rows(ctx: Context, runs: list[tuple[str, int]], results: dict[tuple[str, int], Any]) -> list[Row]:
    summaries = {key: (Summary.of([x.rate for x in got]), Summary.of([x.cpu_per_100k for x in got]))
                 for key, got in results.items() if not isinstance(got, str)}
    rows = []
    for who, handlers in runs:
        label, role = _LABELS[who]
        row = Row("W5", f"Redis, {GROUPS} groups x {len(FANOUT_TYPES)} types, {handlers} handler(s)", label, role,
                  unit="events/s per group")
        got = results.get((who, handlers))
        if isinstance(got, str):
            row.error = got
        elif got is None:
            row.note = ctx.faststream_missing or ""
        else:
            row.value, row.cpu_per_100k = summaries[(who, handlers)]
            row.data = {"samples": [x.as_dict() for x in got]}
        if who == "router" and row.value is not None:
            for other, column in (("raw", RAW), ("faststream", FASTSTREAM)):
                if (other, handlers) in summaries and (check := ratio_check(row.value, summaries[(other, handlers)][0],
                                                                            column)):
                    row.checks.append(check)
            one = summaries.get(("router", 1))
            if handlers == max(ctx.settings.fanout_handlers) and one and handlers > 1:
                growth = (row.cpu_per_100k.median / one[1].median - 1) * 100
                row.checks.append(at_most(growth, 10, f"CPU/event {growth:+.0f} % from 1 to {handlers} handlers",
                                          " %"))
        rows.append(row)
    return rows


async def _fill(spec: dict[str, Any], with_faststream: bool) -> None:
    values = envelopes(spec["events"], types=FANOUT_TYPES)
    await clients.fill_redis(spec["redis_url"], f"{spec['namespace']}:data", values)
    if with_faststream:
        await clients.fill_redis(spec["redis_url"], spec["fs_stream"], values, faststream=True)


def _dispatch_table(handlers: int, meter: Meter) -> dict[str, list[Any]]:
    """type -> the handlers: distinct no-op functions (subscribe is idempotent per function), the
    first of which also counts the event."""
    async def counting(_: Any) -> None:
        meter.tick()

    chosen = [counting, *(_noop() for _ in range(handlers - 1))]
    return defaultdict(list, {t: chosen for t in FANOUT_TYPES})


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    meter = Meter(spec["warmup_s"], spec["window_s"], spec["events"])
    table = _dispatch_table(spec["handlers"], meter)
    group, stream = unique("g"), f"{spec['namespace']}:data"
    if spec["who"] == "router":
        from coordination.event_router import UnifiedEventRouter

        router = UnifiedEventRouter(clients.router_config(spec["redis_url"], None, spec["namespace"], group))
        for event_type, handlers in table.items():
            for handler in handlers:
                router.subscribe(event_type, handler)
        await router.start()
        sample = await meter.wait(600)
        await router.stop()
    elif spec["who"] == "raw":
        client = clients.redis_client(spec["redis_url"])
        await client.xgroup_create(stream, group, id="0")
        while not meter.done.is_set():
            reply = await client.xreadgroup(group, "c", {stream: ">"}, count=500, block=100)
            for _, fields in reply[0][1] if reply else ():
                raw = fields[b"event"]
                for handler in table[head(raw).event_type]:
                    await handler(raw)
            if reply:
                await client.xack(stream, group, *(entry_id for entry_id, _ in reply[0][1]))
        sample = await meter.wait(1)
        await client.aclose()
    else:
        from faststream import AckPolicy
        from faststream.redis import StreamSub

        broker = clients.fs_redis(spec["redis_url"])

        async def dispatch(body: bytes) -> None:
            for handler in table[head(body).event_type]:
                await handler(body)

        broker.subscriber(stream=StreamSub(spec["fs_stream"], group=group, consumer="c", max_records=500,
                                           last_id="0"), ack_policy=AckPolicy.ACK, **clients.RAW_BODY)(dispatch)
        async with clients.started(broker):
            sample = await meter.wait(600)
    return {"fanout": sample.as_dict()}


def _noop() -> Any:
    async def noop(_: Any) -> None:
        return None

    return noop
