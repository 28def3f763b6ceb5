"""The brokers' security options against real services (scripts/services sets them all up):

    Redis TLS         rediss:// on the Redis port + 10000, server certificate from our local CA
    Kafka SCRAM       SCRAM-SHA-256 and SCRAM-SHA-512 on the SASL_PLAINTEXT listener (port + 2)
    Kafka SSL         the SSL listener (port + 3), server certificate from the same CA

The user everywhere is ringrift / ringrift-secret. Where the services are comes from the environment
(`eval "$(scripts/services up)"` exports it); the defaults match the default ports. A missing service
or CA fails these tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import brokers
from brokers import AuthenticationFailed, ConfigurationError
from brokers.base import Broker
from brokers.kafka import KafkaBroker
from schemas.envelope import RouterEvent
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique

pytestmark = pytest.mark.integration

_REPO = Path(__file__).resolve().parents[2]
_redis = urlsplit(REDIS_URL)
_kafka_host, _, _kafka_port = KAFKA_BOOTSTRAP.split(",")[0].strip().rpartition(":")

REDIS_TLS_URL = os.environ.get(
    "RINGRIFT_REDIS_TLS_URL", f"rediss://{_redis.hostname}:{(_redis.port or 6379) + 10000}{_redis.path or '/0'}")
TLS_CA = os.environ.get("RINGRIFT_TLS_CA", str(_REPO / ".services" / "tls" / "ca.pem"))
KAFKA_SSL_BOOTSTRAP = os.environ.get("RINGRIFT_KAFKA_SSL_BOOTSTRAP", f"{_kafka_host}:{int(_kafka_port) + 3}")
KAFKA_SASL_BOOTSTRAP = f"{_kafka_host}:{int(_kafka_port) + 2}"

USER, PASSWORD = "ringrift", "ringrift-secret"
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500, "retry_budget_s": 5}
_HOW = "start the services with `eval \"$(scripts/services up)\"` (or run `scripts/test`)"

_probed: dict[str, str | None] = {}


def _require(what: str, make: object) -> None:
    """Fail (never skip) when the service `make()` connects to does not answer."""
    if not Path(TLS_CA).is_file():
        pytest.fail(f"CA certificate {TLS_CA} is missing (RINGRIFT_TLS_CA); {_HOW}", pytrace=False)

    async def probe() -> str | None:
        try:
            async with make(retry_budget_s=2) as broker:  # type: ignore[operator]
                await broker.ensure_topic("ringrift.probe")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    if what not in _probed:
        _probed[what] = asyncio.run(probe())
    if _probed[what]:
        pytest.fail(f"{what} is not reachable ({_probed[what]}); {_HOW}", pytrace=False)


def _redis_tls(**options: object) -> Broker:
    return brokers.connect(REDIS_TLS_URL, block_ms=100, **{"ssl_ca_certs": TLS_CA, **options})


def _kafka_ssl(**options: object) -> KafkaBroker:
    return KafkaBroker(f"kafka://{KAFKA_SSL_BOOTSTRAP}", **{"security_protocol": "SSL", "ssl_cafile": TLS_CA,
                                                            **FAST, **options})


def _kafka_scram(mechanism: str, password: str = PASSWORD, **options: object) -> KafkaBroker:
    return KafkaBroker(f"kafka://{USER}:{password}@{KAFKA_SASL_BOOTSTRAP}", sasl_mechanism=mechanism,
                       **{**FAST, **options})


@pytest.fixture
def redis_tls() -> None:
    _require(REDIS_TLS_URL, _redis_tls)


@pytest.fixture
def kafka_ssl() -> None:
    _require(f"Kafka SSL at {KAFKA_SSL_BOOTSTRAP}", _kafka_ssl)


@pytest.fixture
def kafka_sasl() -> None:
    _require(f"Kafka SCRAM-SHA-256 at {KAFKA_SASL_BOOTSTRAP}",
             lambda **options: _kafka_scram("SCRAM-SHA-256", **options))


def _event(n: int) -> RouterEvent:
    return RouterEvent.new("TRAINING_COMPLETED", {"n": n}, source="security-test")


async def _round_trip(broker: Broker) -> None:
    """Publish two events and get both back through a consumer group (and by a plain read)."""
    topic, group = unique("secure"), unique("g")
    await broker.ensure_topic(topic)
    ids = [await broker.publish(topic, _event(n)) for n in (1, 2)]
    got = []
    stream = broker.consume(topic, group)
    try:
        async with asyncio.timeout(30):
            async for delivery in stream:
                got.append(delivery)
                await delivery.ack()
                if len(got) == 2:
                    break
    finally:
        await stream.aclose()
    assert [d.record_id for d in got] == ids
    assert [d.event.payload["n"] for d in got if d.event] == [1, 2]
    assert [r.record_id async for r in broker.read(topic)] == ids


# -- Redis over TLS -------------------------------------------------------------------------------

async def test_redis_over_tls_publishes_and_reads_back(redis_tls: None) -> None:
    async with _redis_tls() as broker:
        await _round_trip(broker)


async def test_redis_tls_ca_from_the_environment(redis_tls: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGRIFT_REDIS_SSL_CA_CERTS", TLS_CA)
    async with brokers.connect(REDIS_TLS_URL) as broker:
        topic = unique("secure")
        await broker.ensure_topic(topic)
        assert await broker.publish(topic, _event(1))


async def test_redis_tls_without_the_ca_is_one_clear_error_not_a_retry_loop(
        redis_tls: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RINGRIFT_REDIS_SSL_CA_CERTS", raising=False)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match=r"certificate not trusted.*no CA bundle given"):
        async with brokers.connect(REDIS_TLS_URL, retry_budget_s=30):
            pass
    assert time.monotonic() - started < 5  # not the 30 s budget


async def test_redis_tls_with_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        async with brokers.connect(REDIS_TLS_URL, ssl_ca_certs=str(tmp_path / "nope.pem"), retry_budget_s=30):
            pass


# -- Kafka SCRAM ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_kafka_scram_right_password_publishes_and_consumes(kafka_sasl: None, mechanism: str) -> None:
    async with _kafka_scram(mechanism) as broker:
        assert broker.settings.security_protocol == "SASL_PLAINTEXT"
        await _round_trip(broker)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_kafka_scram_wrong_password_fails_at_once(kafka_sasl: None, mechanism: str) -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match=f"{mechanism} user 'ringrift'"):
        await _kafka_scram(mechanism, password="wrong", retry_budget_s=10).start()
    assert time.monotonic() - started < 3  # no retry loop over the 10 s budget


# -- Kafka over SSL -------------------------------------------------------------------------------

async def test_kafka_over_ssl_publishes_and_consumes(kafka_ssl: None) -> None:
    async with _kafka_ssl() as broker:
        await _round_trip(broker)


async def test_kafka_ssl_without_the_ca_fails_at_once(kafka_ssl: None) -> None:
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed, match=r"refused TLS|CERTIFICATE_VERIFY_FAILED"):
        await _kafka_ssl(ssl_cafile=None, retry_budget_s=10).start()
    assert time.monotonic() - started < 3
