"""Broker outages under the router: without a spool publish raises naming the bus within the budget;
with one it returns, the spool drains in order once the broker is back, and a publisher killed with a
non-empty spool drains it when it starts again. A subscriber gets every acknowledged event exactly once.

A private Redis (6394) and a private Kafka (19492) are stopped and started here (scripts/services),
so the outages disturb nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import brokers
from brokers.errors import BrokerUnavailable
from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import require_service, unique, until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = str(ROOT / "scripts" / "services")
WORKER = str(Path(__file__).with_name("spool_worker.py"))
REDIS_PORT, KAFKA_PORT = 6394, 19492
REDIS_URL, KAFKA_BOOTSTRAP = f"redis://127.0.0.1:{REDIS_PORT}/0", f"127.0.0.1:{KAFKA_PORT}"
FLAGS = {"redis": ["--only", "redis", "--redis-port", str(REDIS_PORT)],
         "kafka": ["--only", "kafka", "--kafka-port", str(KAFKA_PORT)]}
BUDGET = 2.0
TYPE = "NEW_GAMES_AVAILABLE"  # rides all three buses (it has a stage mapping)


def _services(command: str, service: str) -> None:
    done = subprocess.run([SERVICES, command, *FLAGS[service]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"scripts/services {command} {service} failed:\n{done.stderr[-3000:]}"


async def _services_async(command: str, service: str) -> None:
    await asyncio.to_thread(_services, command, service)


@pytest.fixture(scope="module")
def private_services() -> Iterator[None]:
    for service in ("redis", "kafka"):
        _services("up", service)
    require_service(REDIS_URL)
    require_service(f"kafka://{KAFKA_BOOTSTRAP}")
    try:
        yield
    finally:
        for service in ("kafka", "redis"):
            _services("down", service)


@pytest.fixture
def both_up(private_services: None) -> Iterator[None]:
    yield
    for service in ("redis", "kafka"):  # a failed test must not leave the next one without a broker
        _services("up", service)


def _config(namespace: str, node_id: str, **overrides: object) -> RouterConfig:
    values: dict[str, object] = dict(
        redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP, namespace=namespace, node_id=node_id,
        start_position="earliest", publish_retry_budget_s=BUDGET, spool_probe_timeout_s=2.0,
        spool_backoff_max_s=0.5, redis_options={"block_ms": 100},
        kafka_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500})
    values.update(overrides)
    return RouterConfig(**values)  # type: ignore[arg-type]


def _env(namespace: str, spool_dir: Path) -> dict[str, str]:
    return {**os.environ, "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
            "RINGRIFT_NAMESPACE": namespace, "RINGRIFT_NODE_ID": "publisher", "RINGRIFT_SPOOL_DIR": str(spool_dir),
            "RINGRIFT_PUBLISH_RETRY_BUDGET": str(BUDGET), "RINGRIFT_ROUTER_START": "earliest"}


async def _received_once(namespace: str, expected: list[str]) -> None:
    """A fresh subscriber router (its own group, from the start) handles each expected event once."""
    handled: Counter[str] = Counter()

    def on_event(event: RouterEvent) -> None:
        handled[event.event_id] += 1

    subscriber = UnifiedEventRouter(_config(namespace, unique("subscriber")))
    subscriber.subscribe(TYPE, on_event)
    await subscriber.start()
    try:
        await until(lambda: set(handled) >= set(expected), 60, "every event handled")
        await asyncio.sleep(1.0)  # room for a late duplicate to show up
    finally:
        await subscriber.stop()
    assert set(handled) == set(expected), "events handled that were never acknowledged"
    assert [i for i, n in handled.items() if n != 1] == [], "events handled more than once"


async def _ids_on(url: str, topic: str) -> list[str]:
    async with brokers.connect(url, retry_budget_s=5) as broker:
        return [r.event.event_id async for r in broker.read(topic) if r.event is not None]


@pytest.mark.parametrize("service", ["redis", "kafka"])
async def test_outage_without_spool_raises_with_spool_drains(service: str, both_up: None,
                                                             tmp_path: Path) -> None:
    ns, plain_ns = unique("spool"), unique("plain")
    down_buses = ["data", "stage"] if service == "redis" else ["cross"]
    plain = UnifiedEventRouter(_config(plain_ns, "plain"))
    spooling = UnifiedEventRouter(_config(ns, "publisher", spool_dir=str(tmp_path / "spool")))
    await plain.start()
    await spooling.start()
    try:
        before = [(await spooling.publish(TYPE, {"config_key": "hex8_2p", "n": -1})).event_id]
        await _services_async("down", service)

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as raised:
            await plain.publish(TYPE, {"config_key": "hex8_2p"})
        assert time.monotonic() - started < BUDGET + 1.0
        assert all(f"{bus} bus" in str(raised.value) or f"{bus} and" in str(raised.value) for bus in down_buses)

        started = time.monotonic()
        during = [(await spooling.publish(TYPE, {"config_key": "hex8_2p", "n": n})).event_id for n in range(20)]
        assert time.monotonic() - started < BUDGET + 2.0  # only the first publish waits for the budget
        stats = spooling.get_stats()
        assert stats["spooled"] == 20 * len(down_buses)
        assert stats["spool_depth"] == {**{bus: 20 for bus in down_buses}, "total": 20 * len(down_buses)}
        assert stats["published"] == {"data": 21, "stage": 21, "cross": 21} | {bus: 1 for bus in down_buses}

        await _services_async("up", service)
        await until(lambda: spooling.get_stats()["spool_depth"]["total"] == 0, 60, "spool drained")
        assert spooling.get_stats()["spool_drained"] == 20 * len(down_buses)
        assert not list((tmp_path / "spool").glob("*/*.rec"))
    finally:
        await plain.stop()
        await spooling.stop()

    expected = before + during
    await _received_once(ns, expected)
    topic, url = (f"{ns}:data", REDIS_URL) if service == "redis" else (f"{ns}.events", f"kafka://{KAFKA_BOOTSTRAP}")
    on_bus = await _ids_on(url, topic)
    assert set(on_bus) == set(expected)
    # at-least-once: the send that timed out may still land when the broker is back, beside its spooled
    # copy (the subscriber's dedup absorbed it above); first occurrences keep the publish order
    assert list(dict.fromkeys(i for i in on_bus if i in during)) == during, "the spool did not keep the order"


async def test_a_killed_publisher_drains_its_spool_when_started_again(both_up: None, tmp_path: Path) -> None:
    ns, spool_dir = unique("killed"), tmp_path / "spool"
    env = _env(ns, spool_dir)
    log_path = tmp_path / "publisher.log"
    with log_path.open("w") as log:
        publisher = subprocess.Popen(  # noqa: ASYNC220 (its stdout is read off the loop, line by line)
            [sys.executable, WORKER, "publish", "30"], env=env, cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    acknowledged: list[str] = []
    try:
        assert publisher.stdout is not None and publisher.stdin is not None
        first = await asyncio.to_thread(publisher.stdout.readline)
        assert first.startswith("ACK "), f"{first!r}\n{log_path.read_text()[-3000:]}"
        acknowledged.append(first.split()[1])
        await _services_async("down", "kafka")
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        while not (line := await asyncio.to_thread(publisher.stdout.readline)).startswith("DONE"):
            assert line.startswith("ACK "), f"unexpected worker output {line!r}"
            acknowledged.append(line.split()[1])
        assert json.loads(line.split(" ", 1)[1]) == {"cross": 30, "total": 30}
    finally:
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=10)
    assert len(acknowledged) == 31
    assert len(list(spool_dir.glob("cross/*.rec"))) == 30

    await _services_async("up", "kafka")
    drained = await asyncio.to_thread(subprocess.run, [sys.executable, WORKER, "drain"], env=env, cwd=ROOT,
                                      capture_output=True, text=True, timeout=90)
    assert drained.returncode == 0, drained.stderr[-3000:]
    report = json.loads(drained.stdout.split("DRAINED ", 1)[1])
    assert report["spool_drained"] == 30 and report["spool_depth"] == {"total": 0}
    assert not list(spool_dir.glob("*/*.rec"))

    await _received_once(ns, acknowledged)
    on_kafka = await _ids_on(f"kafka://{KAFKA_BOOTSTRAP}", f"{ns}.events")
    assert Counter(on_kafka) == Counter(acknowledged), "lost or duplicated on the cross-process bus"
    assert [i for i in on_kafka if i in acknowledged[1:]] == acknowledged[1:], "the spool did not keep the order"


async def test_a_node_agent_stopped_with_a_non_empty_spool_keeps_it_and_drains_it_when_started_again(
        both_up: None, tmp_path: Path) -> None:
    """`coord node run` with a spool: Kafka goes down while a daemon publishes, SIGTERM stops the agent
    cleanly (exit 0) with records still in the spool, which stay on disk; started again with Kafka back,
    the agent drains them: every publish that returned is on the cross topic."""
    from coordination.spool import Spool

    namespace, spool_dir, ids_file = unique("agent-spool"), tmp_path / "spool", tmp_path / "ids.txt"
    env = {**_env(namespace, spool_dir), "RINGRIFT_NODE_ID": "spool-node", "SPOOL_TICKER_FILE": str(ids_file),
           "RINGRIFT_COORDINATION_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "coordination.cli", "node", "run", "--profile", "minimal", "--health-port", "0",
               "--heartbeat-interval", "0", "--plugin", "tests.faults.spool_ticker_plugin"]

    log = tmp_path / "agent.log"

    def start() -> subprocess.Popen[str]:
        # stderr to a file: a pipe nobody reads would fill up with the client's outage logs and block the agent
        with open(log, "a") as stderr:
            agent = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert " ready: " in line, f"the agent did not start: {line}{log.read_text()[-3000:]}"
        return agent

    def published() -> list[str]:
        return ids_file.read_text().split() if ids_file.exists() else []

    agent = start()
    try:
        await until(lambda: len(published()) >= 3, 60, "the ticker's first publishes")
        await _services_async("down", "kafka")
        before_outage = len(published())
        await until(lambda: len(published()) >= before_outage + 5, 60, "publishes spooled during the outage")
        agent.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(agent.communicate, timeout=90)
        assert agent.returncode == 0 and "node stopped" in out, f"exit {agent.returncode}: {log.read_text()[-3000:]}"
    finally:
        if agent.poll() is None:
            agent.kill()
    spool = Spool(spool_dir)
    try:
        kept = spool.depth("cross")
    finally:
        spool.close()
    assert kept >= 5, f"the spool kept {kept} records after the stop"
    sent = published()

    await _services_async("up", "kafka")
    agent = start()
    try:
        topic = f"{namespace}.events"

        async def drained() -> bool:
            return set(sent) <= set(await _ids_on(f"kafka://{KAFKA_BOOTSTRAP}", topic))

        await until(drained, 60, "the spool drained after the restart", interval=0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(agent.communicate, timeout=90)
    on_topic = Counter(await _ids_on(f"kafka://{KAFKA_BOOTSTRAP}", topic))
    assert [i for i in sent if on_topic[i] != 1] == [], "a spooled publish reached Kafka twice or not at all"
