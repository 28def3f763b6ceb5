"""Brokers: one contract (`brokers.base.Broker`), three implementations, picked by URL scheme.

    broker = brokers.connect("redis://127.0.0.1:6379/0")     # Redis Streams
    broker = brokers.connect("kafka://127.0.0.1:9092")       # Apache Kafka
    broker = brokers.connect("memory://")                    # in-process, for unit tests
"""

from __future__ import annotations

from typing import Any

from brokers.base import Broker, Capabilities, Delivery, Record
from brokers.errors import (
    AuthenticationFailed,
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    RecordTooLarge,
    TopicNotFound,
)

__all__ = [
    "AuthenticationFailed",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "BrokerUnavailable",
    "Capabilities",
    "ConfigurationError",
    "Delivery",
    "Record",
    "RecordTooLarge",
    "TopicNotFound",
    "connect",
]


def connect(url: str, **options: Any) -> Broker:
    """A broker for `url` (not yet started: use `async with` or `await broker.start()`)."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        from brokers.redis_streams import RedisStreamsBroker

        return RedisStreamsBroker(url, **options)
    if scheme == "kafka":
        from brokers.kafka import KafkaBroker

        return KafkaBroker(url, **options)
    if scheme == "memory":
        from brokers.memory import MemoryBroker

        return MemoryBroker(url, **options)
    raise ConfigurationError(f"unknown broker URL scheme in {url!r}: use redis://, rediss://, kafka:// or memory://")
