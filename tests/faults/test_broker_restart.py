"""Restart the broker while a loop publishes and a member consumes: every publish that returned is
readable afterwards and reaches the consumer; both go on by themselves once the broker is back.

Each test runs its own Redis / Kafka instance (other ports, started by scripts/services) so that the
restart disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

import brokers
from schemas.envelope import RouterEvent

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SERVICES = str(Path(__file__).resolve().parents[2] / "scripts" / "services")
REDIS_PORT = 6391
KAFKA_PORT = 19192


def _services(*args: str) -> None:
    done = subprocess.run([SERVICES, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"scripts/services {' '.join(args)} failed:\n{done.stderr[-3000:]}"


@pytest.fixture
def private_redis() -> str:
    _services("up", "--only", "redis", "--redis-port", str(REDIS_PORT))
    yield f"redis://127.0.0.1:{REDIS_PORT}/0"
    _services("down", "--only", "redis", "--redis-port", str(REDIS_PORT))


@pytest.fixture
def private_kafka() -> str:
    _services("up", "--only", "kafka", "--kafka-port", str(KAFKA_PORT))
    yield f"kafka://127.0.0.1:{KAFKA_PORT}"
    _services("down", "--only", "kafka", "--kafka-port", str(KAFKA_PORT))


async def _publish_through_a_restart(url: str, service: str, port_flag: str, port: int) -> None:
    topic = f"restart-{service}"
    acknowledged: list[str] = []
    stop = asyncio.Event()
    async with brokers.connect(url, retry_budget_s=60) as broker:
        await broker.ensure_topic(topic)

        async def publish_loop() -> None:
            n = 0
            while not stop.is_set():
                event = RouterEvent.new("TRAINING_PROGRESS", {"n": n})
                await broker.publish(topic, event)
                acknowledged.append(event.event_id)
                n += 1
                await asyncio.sleep(0.005)

        consumed: set[str] = set()

        async def consume_loop() -> None:
            async for delivery in broker.consume(topic, "restart-group", consumer="survivor"):
                consumed.add(delivery.event.event_id)
                await delivery.ack()

        consumer = asyncio.create_task(consume_loop())
        loop = asyncio.create_task(publish_loop())
        while len(acknowledged) < 50:
            await asyncio.sleep(0.01)
        restart = await asyncio.create_subprocess_exec(SERVICES, "restart", service, port_flag, str(port),
                                                       stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.PIPE)
        _, err = await restart.communicate()
        assert restart.returncode == 0, err.decode()[-3000:]
        after_restart = len(acknowledged)
        async with asyncio.timeout(90):
            while len(acknowledged) < after_restart + 50:
                await asyncio.sleep(0.05)
        stop.set()
        await loop
        async with asyncio.timeout(60):
            while not consumed.issuperset(acknowledged):
                await asyncio.sleep(0.05)
        consumer.cancel()
        stored = {r.event.event_id async for r in broker.read(topic)}
    missing = [event_id for event_id in acknowledged if event_id not in stored]
    assert not missing, f"{len(missing)} acknowledged publishes are gone after the restart"
    assert len(acknowledged) >= after_restart + 50


async def test_redis_restart_loses_no_acknowledged_publish(private_redis: str) -> None:
    await _publish_through_a_restart(private_redis, "redis", "--redis-port", REDIS_PORT)


async def test_kafka_restart_loses_no_acknowledged_publish(private_kafka: str) -> None:
    await _publish_through_a_restart(private_kafka, "kafka", "--kafka-port", KAFKA_PORT)
