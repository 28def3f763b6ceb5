"""DLQ_RETRY end to end on real Redis and Kafka: a handler that fails the first time is re-driven from
the Kafka dead-letter topic, runs successfully once, and its letter is `redriven` in the Redis hash."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from coordination.config import RouterConfig
from coordination.daemon_clock import ManualClock
from coordination.daemons.dlq_retry import DlqRetryDaemon, LetterStatus
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique, until

pytestmark = pytest.mark.integration




async def test_a_failed_event_is_redriven_once_and_marked_redriven_in_redis(kafka_service: str) -> None:
    ns = unique("dlqit")
    config = RouterConfig(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP, namespace=ns, node_id="node-d",
                          start_position="earliest", handler_timeout_s=5.0, max_attempts=1,
                          redis_options={"block_ms": 100},
                          kafka_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500})
    router = UnifiedEventRouter(config)
    failures: list[RouterEvent] = []
    successes: list[RouterEvent] = []

    def handler(event: RouterEvent) -> None:
        if not failures:
            failures.append(event)
            raise RuntimeError("not yet")
        successes.append(event)

    router.subscribe("TRAINING_COMPLETED", handler)
    await router.start()
    client = aioredis.Redis.from_url(REDIS_URL)
    daemon: DlqRetryDaemon | None = None
    try:
        original = await router.publish("TRAINING_COMPLETED", {"config_key": "hex8_2p", "run": ns})
        await until(lambda: len(failures) == 1)
        assert router.dlq is not None
        deadline = time.monotonic() + 30
        while not (letters := await router.dlq.list()):
            assert time.monotonic() < deadline, "no dead letter on the Kafka topic"
            await asyncio.sleep(0.1)
        [dead] = letters
        assert dead.event is not None and dead.event.event_id == original.event_id
        clock = ManualClock(dead.last_failure_at)
        daemon = DlqRetryDaemon(router, clock=clock)
        assert (await daemon.run_pass()).redriven == []  # not due before 60 s
        await clock.advance(60.0)
        assert (await daemon.run_pass()).redriven == [dead.dead_letter_id]
        await until(lambda: len(successes) == 1)
        assert successes[0].source == f"dlq_retry:{dead.dead_letter_id}"
        assert successes[0].parent_event_id == original.event_id
        await clock.advance(3600.0)
        await daemon.run_pass()
        await asyncio.sleep(1.0)
        assert len(successes) == 1 and len(await router.dlq.list()) == 1
        raw = await client.hget(f"{ns}:dlq:status", dead.dead_letter_id)
        assert raw is not None
        status = LetterStatus.decode(raw)
        assert status.state == "redriven" and status.tries == 1 and status.failed_again_as == ""
        assert status.redriven_as == successes[0].event_id
    finally:
        if daemon is not None:
            await daemon.close()
        await client.delete(f"{ns}:dlq:status")
        await client.aclose()
        await router.stop()
