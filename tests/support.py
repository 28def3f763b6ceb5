"""Test support: where the real services are, unique names, brokers configured for tests.

Integration tests need Redis and Kafka (`scripts/services up` starts them; `scripts/test` does it for
you). When they are missing, those tests fail loudly with how to start them; they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import brokers
from brokers.base import Broker
from coordination.config import RouterConfig

REDIS_URL = os.environ.get("RINGRIFT_REDIS_URL", "redis://127.0.0.1:6379/0")
KAFKA_BOOTSTRAP = os.environ.get("RINGRIFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
KAFKA_URL = f"kafka://{KAFKA_BOOTSTRAP}"

_service_errors: dict[str, str | None] = {}


async def _probe(url: str) -> str | None:
    try:
        async with brokers.connect(url, retry_budget_s=2) as broker:
            await broker.ensure_topic("ringrift.probe")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def require_service(url: str) -> None:
    """Fail the test (never skip) when the service behind `url` does not answer."""
    if url not in _service_errors:
        _service_errors[url] = asyncio.run(_probe(url))
    if _service_errors[url]:
        pytest.fail(f"{url} is not reachable ({_service_errors[url]}); start the services with "
                    "`eval \"$(scripts/services up)\"` or run `scripts/test`", pytrace=False)


ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def private_redis(*ports: int) -> Iterator[list[str]]:
    """Extra Redis servers on private ports (scripts/services; one per simulated node), stopped after."""
    services = str(ROOT / "scripts" / "services")
    try:
        for port in ports:
            done = subprocess.run([services, "up", "--only", "redis", "--redis-port", str(port)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"scripts/services up --redis-port {port} failed:\n{done.stderr[-3000:]}"
        urls = [f"redis://127.0.0.1:{port}/0" for port in ports]
        for url in urls:
            require_service(url)
        yield urls
    finally:
        for port in ports:
            subprocess.run([services, "down", "--only", "redis", "--redis-port", str(port)], cwd=ROOT,
                           capture_output=True, timeout=120, check=False)


def memory_router_config(**overrides: object) -> RouterConfig:
    """A router on fresh memory:// buses with fast handler retries (unit tests); `overrides` win."""
    name = unique("mem")
    values: dict[str, object] = dict(
        redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}", namespace=unique("ns"),
        node_id="node-a", start_position="earliest", handler_timeout_s=2.0, max_attempts=2,
        retry_initial_s=0.01, retry_max_s=0.02)
    values.update(overrides)
    return RouterConfig(**values)  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_broker(kind: str, **options: object) -> Broker:
    """A broker of `kind` with settings suited to tests (short blocking reads and sessions)."""
    if kind == "memory":
        return brokers.connect(f"memory://{unique('mem')}", **options)
    if kind == "redis":
        return brokers.connect(REDIS_URL, block_ms=100, **options)
    from brokers.attempts import RedisAttemptStore

    options.setdefault("attempt_store", RedisAttemptStore(REDIS_URL))
    return brokers.connect(KAFKA_URL, session_timeout_ms=6000, heartbeat_interval_ms=500, **options)


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 30.0,
                what: str = "condition", interval: float = 0.01) -> None:
    """Wait until `predicate()` (plain or async) holds, asking every `interval` seconds (a predicate
    that reads a broker wants more than the default); fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what} not met within {timeout:g} s"
        await asyncio.sleep(interval)
