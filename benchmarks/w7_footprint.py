"""W7: footprint of a node agent (`coord node run --profile coordinator`): idle, then under load.

Idle: once the agent is ready and has settled (half of `idle_s`), its CPU (the kernel's accounting of the process in
/proc/<pid>/stat, all threads) over `idle_s`, and its resident memory (VmRSS). Beside it, idle alike:
the raw equivalent (one process blocked reading the two Redis buses with redis-py and joined to the
Kafka bus with aiokafka) and a FastStream app subscribed to the same three.
Under load (ours only: a full run spends its ten minutes here): a separate process writes
`soak_rate` events/s to the agent's data bus (pipelined XADD every 10 ms, the stream trimmed to
200k entries so the shared Redis is not filled) for `soak_s`; the agent's RSS is sampled
throughout. Growth compares the median RSS of the run's last tenth with that of its second tenth
(after warm-up). Targets: idle < 5 % of a core and < 200 MB; growth <= 5 % ("no growth").
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import clients
from benchmarks.child import ready
from benchmarks.context import Context
from benchmarks.events import EVENT_TYPE, envelope, unique
from benchmarks.procs import Child, ChildFailed
from benchmarks.results import FASTSTREAM, RAW, Check, Row, at_most

__all__ = ["child", "run"]

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _idle(process: Child, settle_s: float, idle_s: float) -> dict[str, float]:
    time.sleep(settle_s)
    cpu0, t0 = _cpu_s(process.pid), time.monotonic()
    time.sleep(idle_s)
    cpu = (_cpu_s(process.pid) - cpu0) / (time.monotonic() - t0) * 100
    return {"cpu_percent": cpu, "rss_mb": _rss_mb(process.pid)}


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def run(ctx: Context) -> list[Row]:
    s = ctx.settings
    ns, node = unique("benchw7"), unique("benchw7node")
    # the profile as deployed: with a cluster secret (its data server and auto sync stop without one),
    # serving an empty data directory of its own on a free port
    data_dir = tempfile.mkdtemp(prefix="benchw7data")
    env = {**os.environ, "RINGRIFT_REDIS_URL": s.redis_url, "RINGRIFT_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
           "RINGRIFT_NAMESPACE": ns, "RINGRIFT_CLUSTER_SECRET": os.environ.get("RINGRIFT_CLUSTER_SECRET") or
           secrets.token_hex(16), "RINGRIFT_DATA_DIR": data_dir, "RINGRIFT_DATA_PORT": str(_free_port())}
    coord = str(Path(sys.executable).with_name("coord"))
    rows = [Row("W7", "idle", "ours: node agent, coordinator profile", "ours"),
            Row("W7", "idle", "raw: redis-py + aiokafka readers", RAW),
            Row("W7", "idle", "FastStream app, 3 subscribers", FASTSTREAM),
            Row("W7", f"{_duration(s.soak_s)} at {s.soak_rate:,} events/s", "ours: node agent", "ours")]
    idle: dict[str, dict[str, float]] = {}
    try:
        for row, who in zip(rows[1:3], ("raw", "faststream"), strict=True):
            if who == "faststream" and ctx.faststream_missing:
                row.note = ctx.faststream_missing
                continue
            ctx.progress(f"W7 footprint: {who}, idle")
            reader = ctx.launcher.start(ctx.spec("W7", who=who, role="idle", namespace=ns))
            try:
                reader.ready(60)
                idle[who] = _idle(reader, s.idle_s / 2, s.idle_s)
            except ChildFailed as exc:
                row.error = str(exc)
            finally:
                reader.kill()
        ctx.progress("W7 footprint: node agent, idle")
        agent = ctx.launcher.spawn([coord, "node", "run", "--profile", "coordinator", "--node-id", node,
                                    "--health-port", "0"], "W7 node agent", env=env)
        try:
            agent.ready(120, marker=" ready: ")
            idle["ours"] = _idle(agent, s.idle_s / 2, s.idle_s)
            ctx.progress(f"W7 footprint: node agent under {s.soak_rate:,} events/s for {s.soak_s:g} s")
            rows[3].data = _soak(ctx, agent, ns, node)
        except ChildFailed as exc:
            rows[0].error = rows[3].error = str(exc)
        finally:
            agent.proc.send_signal(signal.SIGTERM)
            try:
                agent.proc.wait(30)
            finally:
                agent.kill()
    finally:
        asyncio.run(clients.delete_redis(s.redis_url, f"{ns}:*"))
        asyncio.run(clients.delete_topics(s.kafka_bootstrap, prefix=f"{ns}."))
        shutil.rmtree(data_dir, ignore_errors=True)
    _fill_rows(rows, idle)
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _soak(ctx: Context, agent: Child, ns: str, node: str) -> dict[str, Any]:
    s = ctx.settings
    load = ctx.launcher.start(ctx.spec("W7", who="load", role="load", namespace=ns, rate=s.soak_rate,
                                       seconds=s.soak_s), slot=1)
    load.ready(60)
    samples: list[tuple[float, float]] = []  # (seconds into the run, RSS MB)
    cpu0, started = _cpu_s(agent.pid), time.monotonic()
    every = max(1.0, s.soak_s / 60)
    while (elapsed := time.monotonic() - started) < s.soak_s:
        samples.append((elapsed, _rss_mb(agent.pid)))
        time.sleep(min(every, max(0.0, s.soak_s - elapsed)))
    cpu = (_cpu_s(agent.pid) - cpu0) / (time.monotonic() - started) * 100
    sent = load.result(60)
    behind, read = asyncio.run(_group_state(s.redis_url, f"{ns}:data", f"{node}.router"))
    tenth = max(1, len(samples) // 10)
    early = statistics.median(r for _, r in samples[tenth:2 * tenth])
    late = statistics.median(r for _, r in samples[-tenth:])
    return {"rss_mb": samples, "cpu_percent": cpu, "offered_per_s": sent["sent"] / s.soak_s,
            "handled_per_s": read / s.soak_s,
            "behind_at_end": behind, "rss_early_mb": early, "rss_late_mb": late,
            "growth_percent": (late / early - 1) * 100, "rss_max_mb": max(r for _, r in samples)}


async def _group_state(url: str, stream: str, group: str) -> tuple[int | None, int]:
    """(records the group has not handled yet, records it read) from XINFO GROUPS; None for the first
    when Redis reports a null lag (it cannot tell, e.g. after entries were deleted)."""
    client = clients.redis_client(url)
    try:
        for info in await client.xinfo_groups(stream):
            if info["name"].decode() == group:
                lag = info.get("lag")
                behind = None if lag is None else int(lag) + int(info["pending"])
                return behind, int(info.get("entries-read") or 0)
    finally:
        await client.aclose()
    return -1, 0


def _fill_rows(rows: list[Row], idle: dict[str, dict[str, float]]) -> None:
    for row, who in zip(rows[:3], ("ours", "raw", "faststream"), strict=True):
        if who in idle:
            got = idle[who]
            row.text = f"RSS {got['rss_mb']:.0f} MB, CPU {got['cpu_percent']:.1f} % of a core"
            row.data = got
    ours = idle.get("ours")
    if ours:
        rows[0].checks = [at_most(ours["cpu_percent"], 5, f"CPU {ours['cpu_percent']:.1f} %", " %"),
                          at_most(ours["rss_mb"], 200, f"RSS {ours['rss_mb']:.0f} MB", " MB")]
        for who, column in (("raw", RAW), ("faststream", FASTSTREAM)):
            if who in idle:
                rows[0].checks.append(Check(column, f"RSS {ours['rss_mb'] / idle[who]['rss_mb']:.1f}x, "
                                                    f"CPU {ours['cpu_percent'] - idle[who]['cpu_percent']:+.1f} pt"))
    soak = rows[3].data
    if soak:
        rows[3].text = (f"RSS {soak['rss_early_mb']:.0f} -> {soak['rss_late_mb']:.0f} MB (max "
                        f"{soak['rss_max_mb']:.0f}), CPU {soak['cpu_percent']:.0f} % of a core")
        rows[3].note = (f"handled {soak['handled_per_s']:,.0f}/s of {soak['offered_per_s']:,.0f}/s offered; "
                        f"{_count(soak['behind_at_end'])} behind at the end")
        rows[3].checks = [at_most(soak["growth_percent"], 5, f"RSS {soak['growth_percent']:+.1f} %", " %")]


def _count(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["role"] == "load":
        return await _load(spec)
    if spec["who"] == "raw":
        await _idle_raw(spec)
    else:
        await _idle_faststream(spec)
    return {}


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    client, stream = clients.redis_client(spec["redis_url"]), f"{spec['namespace']}:data"
    per_tick, sent, i = spec["rate"] // 100, 0, 0
    ready()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < spec["seconds"]:
        due = int(elapsed * spec["rate"]) + per_tick  # catch up after a late tick: open loop
        pipe = client.pipeline(transaction=False)
        while sent < due:
            pipe.xadd(stream, {b"event": envelope(i, EVENT_TYPE)}, maxlen=200_000, approximate=True)
            sent, i = sent + 1, i + 1
        await pipe.execute()
        await asyncio.sleep(max(0.0, sent / spec["rate"] - (time.monotonic() - started)))
    await client.aclose()
    return {"sent": sent}


async def _idle_raw(spec: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer

    ns = spec["namespace"]
    client = clients.redis_client(spec["redis_url"])
    for bus in ("data", "stage"):
        await client.xgroup_create(f"{ns}:raw-{bus}", "raw", id="$", mkstream=True)
    topic = f"{ns}.raw"
    await clients.create_topic(spec["kafka_bootstrap"], topic)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=spec["kafka_bootstrap"], group_id="raw",
                                enable_auto_commit=False)
    await consumer.start()
    ready()
    while True:  # until the parent kills this process
        await client.xreadgroup("raw", "c", {f"{ns}:raw-data": ">", f"{ns}:raw-stage": ">"}, count=100, block=500)
        await consumer.getmany(timeout_ms=10)


async def _idle_faststream(spec: dict[str, Any]) -> None:
    from faststream.redis import StreamSub

    ns = spec["namespace"]
    redis, kafka = clients.fs_redis(spec["redis_url"]), clients.fs_kafka(spec["kafka_bootstrap"])
    for bus in ("data", "stage"):
        redis.subscriber(stream=StreamSub(f"{ns}:fs-{bus}", group="fs", consumer="c"), **clients.RAW_BODY)(_noop)
    topic = f"{ns}.fs"
    await clients.create_topic(spec["kafka_bootstrap"], topic)
    kafka.subscriber(topic, group_id="fs", **clients.RAW_BODY)(_noop)
    async with clients.started(redis), clients.started(kafka):
        ready()
        await asyncio.Event().wait()


async def _noop(body: bytes) -> None:
    return None
