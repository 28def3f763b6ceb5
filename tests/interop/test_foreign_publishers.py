"""Publishers that are not Python: redis-cli and Kafka's own console producer.

The Python consumer must decode what they wrote and compute the content hash the shared vectors
give for the same data.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, make_broker, unique

pytestmark = [pytest.mark.interop, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
VECTORS = {v["name"]: v for v in json.loads((ROOT / "schemas/vectors/content_hash.json").read_text())["vectors"]}
CASES = ["typical training event", "floats as JavaScript prints them", "unicode and escapes"]


def _foreign_json(name: str) -> str:
    vector = VECTORS[name]
    return json.dumps({"event_type": vector["event_type"], "payload": vector["payload"]}, ensure_ascii=False)


async def _first_delivery(kind: str, topic: str):
    async with make_broker(kind) as broker:
        stream = broker.consume(topic, unique("interop"))
        async with asyncio.timeout(30):
            delivery = await anext(stream)
        await delivery.ack()
        await stream.aclose()
        return delivery


@pytest.mark.parametrize("case", CASES)
async def test_redis_cli_xadd_is_decoded_with_the_vector_hash(case: str, redis_service: str) -> None:
    topic = unique("interop:data")
    host_port = REDIS_URL.split("//")[1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    cli = await asyncio.create_subprocess_exec("redis-cli", "-h", host, "-p", port, "XADD", topic, "*", "event",
                                               _foreign_json(case), stdout=asyncio.subprocess.PIPE)
    assert await cli.wait() == 0
    delivery = await _first_delivery("redis", topic)
    assert delivery.event is not None, delivery.error
    assert delivery.event.event_type == VECTORS[case]["event_type"]
    assert delivery.event.content_hash == VECTORS[case]["content_hash"]


def test_kafka_console_producer_is_decoded_with_the_vector_hash(kafka_service: str) -> None:
    topic = unique("interop.events")

    async def create() -> None:
        async with make_broker("kafka") as broker:
            await broker.ensure_topic(topic)

    asyncio.run(create())
    lines = "".join(_foreign_json(case) + "\n" for case in CASES)
    produced = subprocess.run(
        [str(ROOT / "scripts/services"), "kafka-class", "org.apache.kafka.tools.ConsoleProducer",
         "--bootstrap-server", KAFKA_BOOTSTRAP, "--topic", topic],
        input=lines, text=True, capture_output=True, timeout=120)
    assert produced.returncode == 0, produced.stderr

    async def consume_all() -> list:
        async with make_broker("kafka") as broker:
            got = []
            stream = broker.consume(topic, unique("interop"))
            async with asyncio.timeout(60):
                async for delivery in stream:
                    got.append(delivery)
                    await delivery.ack()
                    if len(got) == len(CASES):
                        break
            await stream.aclose()
            return got

    deliveries = asyncio.run(consume_all())
    assert [d.event.content_hash for d in deliveries] == [VECTORS[c]["content_hash"] for c in CASES]
    assert all(len(d.event.event_id) == 36 for d in deliveries)
