"""W3: end-to-end latency, open loop, at 1k and 5k events/s, Redis and Kafka.

Producer and consumer are separate processes pinned to different cores. The producer fires event i
at `start + i / rate` whether or not earlier sends have returned (each send is its own task), and
stamps that *scheduled* time into the payload; the consumer takes latency = time handled - scheduled
time (one CLOCK_MONOTONIC for both), so a slow producer or a backed-up consumer cannot hide its
delay (no coordinated omission). The consumer signals ready only once it has handled a ping sent
through the same path, so group joins are over before the run starts. The first quarter of the run
(at most 1 s) is warm-up. Each contender sends and receives with its own library: raw redis-py
(one writer task pipelining the queued XADDs; XREADGROUP+XACK) and aiokafka (send_and_wait;
getmany+commit), our router (publish to that one bus, a subscriber with dedup on), FastStream
(publish with its defaults, a raw-bytes subscriber; on Kafka its default ACK_FIRST). Kafka producers
all have linger_ms=1 (the product's default). One run per contender: a percentile already
summarises thousands of samples. A consumer that cannot keep up is marked overloaded: its latency
then grows with the length of the run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks import clients
from benchmarks.context import Context
from benchmarks.measure import Summary
from benchmarks.procs import ChildFailed
from benchmarks.results import FASTSTREAM, RAW, Row
from benchmarks.w3_parts import RECEIVERS, SENDERS, latency_checks, names_for, open_loop, receive

__all__ = ["child", "run"]

CONTENDERS = [("raw", RAW, {"redis": "raw: pipelined XADD / XREADGROUP+XACK",
                            "kafka": "raw: aiokafka send / getmany+commit"}),
              ("router", "ours", {"redis": "ours: router", "kafka": "ours: router"}),
              ("faststream", FASTSTREAM, {"redis": "FastStream", "kafka": "FastStream"})]


def run(ctx: Context) -> list[Row]:
    s, rows = ctx.settings, []
    for backend, label in (("redis", "Redis"), ("kafka", "Kafka")):
        for rate in s.rates:
            cell = f"{label}, {rate:,}/s"
            ctx.progress(f"W3 latency, {cell}")
            found: dict[str, dict[str, Any]] = {}
            errors: dict[str, str] = {}
            for who, _, _ in CONTENDERS:
                if who == "faststream" and ctx.faststream_missing:
                    continue
                spec = ctx.spec("W3", backend=backend, who=who, rate=rate, seconds=s.latency_s,
                                names=names_for())
                try:
                    found[who] = _one_run(ctx, spec)
                except ChildFailed as exc:
                    errors[who] = str(exc)
                    ctx.progress(f"[red]{exc}[/red]")
            for who, role, labels in CONTENDERS:
                result = found.get(who)
                row = Row("W3", cell, labels[backend], role, unit="ms", data=result or {})
                if result and not result["latency_ms"]:
                    row.error = (f"no event arrived after the warm-up: {result['received']} of "
                                 f"{result['expected']} arrived")
                elif result:
                    p = result["latency_ms"]
                    row.text = f"p50 {p['p50']:.2f} / p99 {p['p99']:.2f} / p99.9 {p['p99.9']:.2f} ms"
                    row.cpu_per_100k = Summary.of([result["consumer_cpu_s_per_100k"]])
                    notes = [f"{failed} sends failed"] if (failed := result["producer"]["failed"]) else []
                    if result["lost"]:
                        notes.append(f"{result['lost']} of {result['expected']} events never arrived")
                    elif result["handled_per_s"] < 0.95 * rate:
                        notes.append(f"overloaded: handles {result['handled_per_s']:,.0f}/s")
                    row.note = "; ".join(notes)
                    if role == "ours":
                        row.checks = latency_checks(backend, p, found.get("raw"), found.get("faststream"))
                elif who in errors:
                    row.error = errors[who]
                elif who == "faststream":
                    row.note = ctx.faststream_missing or ""
                rows.append(row)
    return rows


def _one_run(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    consumer = ctx.launcher.start({**spec, "role": "consumer"}, slot=0)
    try:
        consumer.ready(60)
        producer = ctx.launcher.start({**spec, "role": "producer"}, slot=1)
        sent = producer.result(spec["seconds"] + 60)
        got = consumer.result(30)
    finally:
        consumer.kill()
        asyncio.run(_cleanup(spec))  # here, not in the child: a child that failed was killed
    cpu = got.pop("cpu_s") / max(1, got["received"]) * 100_000
    return {**got, "consumer_cpu_s_per_100k": cpu, "producer": sent}


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    backend, who = spec["backend"], spec["who"]
    n = int(spec["rate"] * spec["seconds"])
    if spec["role"] == "producer":
        async with SENDERS[(backend, who)](spec) as send:
            return await open_loop(send, spec["rate"], n)
    async with RECEIVERS[(backend, who)](spec) as inbox:
        return await receive(inbox, spec, n)


async def _cleanup(spec: dict[str, Any]) -> None:
    names = spec["names"]
    await clients.delete_redis(spec["redis_url"], names["stream"], f"{names['namespace']}:*")
    if spec["backend"] == "kafka":
        ns = names["namespace"]
        await clients.delete_topics(spec["kafka_bootstrap"], [names["topic"], f"{ns}.events", f"{ns}.dlq"])
