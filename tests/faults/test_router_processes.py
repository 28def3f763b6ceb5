"""The event router across real processes: each router runs in its own interpreter
(tests/faults/router_worker.py), configured by RINGRIFT_* variables alone, on the real Redis and Kafka.

    one node, two processes     a publisher's events reach another process's handler once each,
                                although each rode the data, stage and cross-process buses
    two nodes                   (two Redis servers, one Kafka) a cross-process event reaches the other
                                node once; a data-bus-only event stays on its node
    SIGKILL mid-stream          a subscriber killed while it handles 1,000 events and restarted under
                                the same name leaves every event's ledger row, none missing, and repeats
                                only the handler runs that were in flight at the kill
    crash handler               a handler that kills its process on one event: after max_deliveries
                                restarts that event is a `crash` dead letter and the events after it
                                are handled

Handlers write a ledger in Redis (see router_worker.py): `<ledger>:rows` (HSETNX, one row per event
id) and `<ledger>:hits` (HINCRBY, one count per handler run), so repeated runs are visible.
Every test has its own namespace. The second node's Redis is a private one on port 6395.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import brokers
from coordination.dlq import DeadLetterQueue
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, require_service, unique, until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("router_worker.py")
PYTHON = ROOT / ".venv" / "bin" / "python"
SECOND_REDIS_PORT = 6395
SECOND_REDIS = f"redis://127.0.0.1:{SECOND_REDIS_PORT}/0"
# Short Kafka sessions, so a killed member's partitions go to its successor within seconds.
KAFKA_FOR_WORKERS = f"kafka://{KAFKA_BOOTSTRAP}?session_timeout_ms=6000&heartbeat_interval_ms=500"
EVENT_TYPE = "NEW_GAMES_AVAILABLE"  # has a stage mapping: a default publish rides all three buses
BUSES = 3
POISON_EXIT_CODE = 17  # router_worker.POISON_EXIT_CODE


class Worker:
    """One router_worker.py process: stdout piped (READY, ids), stderr to a log file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def stderr_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def ready(self, timeout: float = 60.0) -> bool:
        """True once the worker printed READY; False when it exited first."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    return False
                if line.strip() == b"READY":
                    return True

    async def stop(self) -> None:
        """SIGTERM, then the exit code must be 0 (the router stopped cleanly)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        assert code == 0, f"worker exited with {code}:\n{self.stderr_tail()}"

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def spawner(script: Path, logs: Path) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start worker processes of `script` (stderr to a log file each); any still running at the end are
    killed (by their pid)."""
    started: list[Worker] = []

    async def start(env: dict[str, str], *args: str) -> Worker:
        log = logs / f"{script.stem}-{len(started)}-{args[0]}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                str(PYTHON), str(script), *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, limit=1 << 20)
        started.append(Worker(process, log))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            await worker.kill()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start router_worker.py processes."""
    async with spawner(WORKER, tmp_path) as start:
        yield start


@pytest.fixture
async def ledger_redis(redis_service: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_service, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def second_redis() -> Iterator[str]:
    """A private Redis standing for a second node (scripts/services, stopped after the module)."""
    services = str(ROOT / "scripts" / "services")
    done = subprocess.run([services, "up", "--only", "redis", "--redis-port", str(SECOND_REDIS_PORT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"scripts/services up failed:\n{done.stderr[-3000:]}"
    try:
        require_service(SECOND_REDIS)
        yield SECOND_REDIS
    finally:
        subprocess.run([services, "down", "--only", "redis", "--redis-port", str(SECOND_REDIS_PORT)],
                       cwd=ROOT, capture_output=True, timeout=120, check=False)


def worker_env(namespace: str, node_id: str, service: str, *, redis_url: str = REDIS_URL,
               **extra: str) -> dict[str, str]:
    """The environment of one worker process: which node, which service, which namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_")}
    env.update(RINGRIFT_REDIS_URL=redis_url, RINGRIFT_KAFKA_BOOTSTRAP=KAFKA_FOR_WORKERS,
               RINGRIFT_NAMESPACE=namespace, RINGRIFT_NODE_ID=node_id, RINGRIFT_SERVICE_NAME=service,
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def subscriber_args(ledger: str, *extra: str) -> tuple[str, ...]:
    """The worker's arguments for a subscriber of EVENT_TYPE writing `ledger` in the main Redis."""
    return ("subscribe", "--event-type", EVENT_TYPE, "--ledger-url", REDIS_URL, "--ledger", ledger, *extra)


async def publish(spawn: Callable[..., Awaitable[Worker]], env: dict[str, str], count: int,
                  *extra: str, timeout: float = 90.0) -> tuple[dict[int, str], dict[str, object]]:
    """Run a publisher process to its end: ({n: event_id}, its router's stats)."""
    worker = await spawn(env, "publish", "--event-type", EVENT_TYPE, "--count", str(count), *extra)
    async with asyncio.timeout(timeout):
        out, _ = await worker.process.communicate()
    assert worker.process.returncode == 0, f"publisher failed:\n{worker.stderr_tail()}"
    ids: dict[int, str] = {}
    stats: dict[str, object] = {}
    for line in out.decode().splitlines():
        if line.startswith("STATS "):
            stats = json.loads(line[6:])
        else:
            n, event_id = line.split()
            ids[int(n)] = event_id
    assert len(ids) == count
    return ids, stats


async def worker_stats(redis: aioredis.Redis, ledger: str) -> dict[str, object]:
    """The subscriber's latest `router.get_stats()` (it writes them to the ledger every 0.1 s)."""
    raw = await redis.get(f"{ledger}:stats")
    return json.loads(raw) if raw else {}


# -- one node, two processes ------------------------------------------------------------------------


async def test_a_publisher_process_reaches_another_process_once_per_event(
        kafka_service: str, spawn: Callable[..., Awaitable[Worker]], ledger_redis: aioredis.Redis) -> None:
    """200 events on data + stage + cross from process A: process B's handler runs once per event and
    B's router counts the two other copies of each as duplicates."""
    ns, count = unique("proc"), 200
    ledger = f"{ns}:ledger"
    subscriber = await spawn(worker_env(ns, "node-1", "consumer"), *subscriber_args(ledger))
    assert await subscriber.ready(), f"subscriber died before READY:\n{subscriber.stderr_tail()}"

    sent, pub_stats = await publish(spawn, worker_env(ns, "node-1", "producer"), count, "--concurrency", "20")
    assert pub_stats["published"] == {"data": count, "stage": count, "cross": count}

    async def every_copy_seen() -> bool:  # each event: one handled copy and two duplicates
        stats = await worker_stats(ledger_redis, ledger)
        return stats.get("duplicates_prevented") == (BUSES - 1) * count and \
            await ledger_redis.hlen(f"{ledger}:rows") >= count
    await until(every_copy_seen, 60, "every copy of every event at the subscriber", interval=0.05)
    await asyncio.sleep(0.5)  # a late extra handler run would show up here
    await subscriber.stop()

    rows = await ledger_redis.hgetall(f"{ledger}:rows")
    hits = await ledger_redis.hgetall(f"{ledger}:hits")
    assert set(rows) == set(sent.values())
    assert {event_id: int(h) for event_id, h in hits.items() if h != "1"} == {}, "a handler ran twice"
    stats = await worker_stats(ledger_redis, ledger)
    assert stats["content_duplicates_prevented"] == 0 and stats["dead_lettered"] == 0


# -- two nodes --------------------------------------------------------------------------------------


async def test_cross_process_events_reach_the_other_node_and_data_bus_events_do_not(
        kafka_service: str, second_redis: str, spawn: Callable[..., Awaitable[Worker]],
        ledger_redis: aioredis.Redis) -> None:
    """n=0 on node 1's data bus only, n=1 on every bus: node 1 handles both, node 2 (its own Redis)
    handles n=1 once, from Kafka, and never sees n=0."""
    ns = unique("proc")
    ledger_1, ledger_2 = f"{ns}:ledger-1", f"{ns}:ledger-2"
    node_1 = await spawn(worker_env(ns, "node-1", "consumer"), *subscriber_args(ledger_1))
    node_2 = await spawn(worker_env(ns, "node-2", "consumer", redis_url=second_redis), *subscriber_args(ledger_2))
    for worker in (node_1, node_2):
        assert await worker.ready(), f"subscriber died before READY:\n{worker.stderr_tail()}"

    publisher_env = worker_env(ns, "node-1", "producer")
    # n=0 on the data bus only, then n=1 on every bus (so the Kafka copy comes after the local one)
    local, _ = await publish(spawn, publisher_env, 1, "--first", "0", "--no-stage", "--no-cross")
    everywhere, _ = await publish(spawn, publisher_env, 1, "--first", "1")
    local_id, cross_id = local[0], everywhere[1]

    async def arrived() -> bool:
        return await ledger_redis.hlen(f"{ledger_1}:rows") == 2 and \
            await ledger_redis.hlen(f"{ledger_2}:rows") >= 1
    await until(arrived, 60, "both events on node 1 and the cross-process one on node 2", interval=0.05)
    await asyncio.sleep(1.0)  # time for a stray copy (or the data-bus-only event) to reach node 2
    for worker in (node_1, node_2):
        await worker.stop()

    rows_1 = await ledger_redis.hgetall(f"{ledger_1}:rows")
    rows_2 = await ledger_redis.hgetall(f"{ledger_2}:rows")
    assert set(rows_1) == {local_id, cross_id}
    assert rows_1[local_id] == "data_bus|0"
    assert rows_2 == {cross_id: "cross_process|1"}, "node 2 got what it should not (or missed the event)"
    for ledger in (ledger_1, ledger_2):
        hits = await ledger_redis.hgetall(f"{ledger}:hits")
        assert set(hits.values()) == {"1"}, f"{ledger}: a handler ran twice: {hits}"
    stats_2 = await worker_stats(ledger_redis, ledger_2)
    assert stats_2["duplicates_prevented"] == 0, "node 2 got a copy of an event twice"


# -- SIGKILL mid-stream -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 16])
async def test_a_subscriber_killed_mid_stream_and_restarted_leaves_every_side_effect_once(
        batch: int, kafka_service: str, spawn: Callable[..., Awaitable[Worker]], ledger_redis: aioredis.Redis) -> None:
    """SIGKILL after >= 250 of 1,000 events are handled (publishing goes on), restart under the same
    node id and service name: 1,000 ledger rows, none missing; repeats bounded by what was in flight
    (RINGRIFT_CONSUME_BATCH deliveries per bus)."""
    ns, count = unique("proc"), 1000
    ledger = f"{ns}:ledger"
    rows, hits = f"{ledger}:rows", f"{ledger}:hits"
    # the restart reuses it: same group, same member
    subscriber_env = worker_env(ns, "node-1", "ledger", RINGRIFT_CONSUME_BATCH=str(batch))
    args = subscriber_args(ledger, "--sleep", "0.004")
    first = await spawn(subscriber_env, *args)
    assert await first.ready(), f"subscriber died before READY:\n{first.stderr_tail()}"

    publisher = asyncio.create_task(publish(spawn, worker_env(ns, "node-1", "producer"), count,
                                            "--concurrency", "4"))

    async def some_handled() -> bool:
        return await ledger_redis.hlen(rows) >= 250
    await until(some_handled, 60, "250 events handled before the kill", interval=0.05)
    await first.kill()  # SIGKILL: no stop(), no final ack or commit
    at_kill = await ledger_redis.hlen(rows)
    assert first.process.returncode == -signal.SIGKILL
    await asyncio.sleep(0.5)  # events keep being published while no subscriber runs

    second = await spawn(subscriber_env, *args)

    async def all_handled() -> bool:
        return await ledger_redis.hlen(rows) >= count
    await until(all_handled, 90, f"{count} ledger rows after the restart", interval=0.05)
    sent, _ = await publisher
    await asyncio.sleep(0.5)  # a late extra handler run would show up here
    await second.stop()

    ledger_rows = await ledger_redis.hgetall(rows)
    ledger_hits = {event_id: int(h) for event_id, h in (await ledger_redis.hgetall(hits)).items()}
    missing = set(sent.values()) - set(ledger_rows)
    assert not missing, f"{len(missing)} events have no ledger row"
    assert set(ledger_rows) == set(sent.values()) and len(ledger_rows) == count
    assert at_kill < count, "the kill landed after the stream was handled: it tested nothing"
    repeated = {event_id: h for event_id, h in ledger_hits.items() if h > 1}
    print(f"\nkill after {at_kill} ledger rows; handler runs repeated after the restart: {len(repeated)} "
          f"{sorted(repeated.values())}")
    # Each bus consumer of the killed process settles the dedup marks of one batch at a time, so at most
    # `batch` handler runs per bus (data, stage, cross) can have done their side effect without their
    # mark settling: only those may run again, and only once.
    assert len(repeated) <= BUSES * batch and all(h == 2 for h in repeated.values()), \
        f"more repeated handler runs than were in flight at the kill: {repeated}"


# -- a handler that kills its process ---------------------------------------------------------------


async def test_a_handler_that_kills_its_process_ends_as_a_crash_dead_letter(
        kafka_service: str, spawn: Callable[..., Awaitable[Worker]], ledger_redis: aioredis.Redis) -> None:
    """Events n=0..11 wait before the first worker starts; the handler of n=3 kills its process.
    The worker is restarted until it survives (READY: its warm-ups came back on every bus, so each bus
    got past the backlog), at most max_deliveries + 2 times."""
    ns, count, poison, max_deliveries = unique("proc"), 12, 3, 3
    ledger = f"{ns}:ledger"
    # earliest: the first worker's new groups start at the backlog published before it
    subscriber_env = worker_env(ns, "node-1", "crashy", RINGRIFT_MAX_DELIVERIES=str(max_deliveries),
                                RINGRIFT_ROUTER_START="earliest")
    sent, _ = await publish(spawn, worker_env(ns, "node-1", "producer"), count)
    names = {event_id: n for n, event_id in sent.items()}

    exits: list[int | None] = []
    for _ in range(max_deliveries + 2):
        worker = await spawn(subscriber_env, *subscriber_args(ledger, "--poison", str(poison)))
        if await worker.ready(timeout=60):
            await worker.stop()
            exits.append(0)
            break
        exits.append(worker.process.returncode)
        assert worker.process.returncode == POISON_EXIT_CODE, f"worker failed:\n{worker.stderr_tail()}"
    assert exits[-1] == 0, f"the worker kept crashing: exit codes {exits}"

    async with brokers.connect(kafka_service) as kafka:
        letters = await DeadLetterQueue(kafka, f"{ns}.dlq").list()
    calls = int(await ledger_redis.get(f"{ledger}:poison_calls") or 0)
    crashes = [x for x in letters if x.stage == "crash" and x.event is not None]
    print(f"\nworker exits {exits}; poison handler runs {calls}; crash dead letters (n, bus, attempts): "
          f"{[(names.get(x.event.event_id, 'warm-up'), x.bus, x.attempts) for x in crashes]}")
    innocent = sorted({names.get(x.event.event_id, -1) for x in crashes} - {poison})
    assert not innocent, "events after the poison (-1: the worker's warm-ups) were dead-lettered as " \
                         f"crashes without their handler ever running: n={innocent}"
    assert [x for x in letters if x.stage != "crash"] == []
    poison_letters = [x for x in crashes if x.event.event_id == sent[poison]]
    assert len(poison_letters) == 1, f"{len(poison_letters)} crash dead letters for the poison event " \
                                     f"(buses {[x.bus for x in poison_letters]}), want exactly one"
    letter = poison_letters[0]
    assert letter.attempts == max_deliveries + 1 and f"max_deliveries={max_deliveries}" in letter.message
    assert (letter.consumer_group, letter.node_id) == ("node-1.crashy", "node-1")
    assert letter.bus in ("data", "stage", "cross") and letter.topic and letter.record_id
    assert 1 <= calls <= max_deliveries, f"the poison handler ran {calls} times"

    rows = await ledger_redis.hgetall(f"{ledger}:rows")
    assert sorted(int(value.split("|")[1]) for value in rows.values()) == [n for n in range(count) if n != poison]
    assert set(rows) == {event_id for n, event_id in sent.items() if n != poison}
    hits = await ledger_redis.hgetall(f"{ledger}:hits")
    # Each crash may interrupt one handling in flight on each of the other buses after its side effect
    # and before its dedup mark was settled: that handling runs again (at-least-once), nothing more.
    repeats = sum(int(h) - 1 for h in hits.values())
    assert repeats <= (BUSES - 1) * calls, f"{repeats} handler re-runs for {calls} crashes: {hits}"
