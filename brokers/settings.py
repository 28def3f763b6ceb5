"""Broker settings: frozen data built from a URL, options and the environment.

Only the `from_url` constructors read `os.environ`. Precedence: explicit options, then the URL (user,
password, query parameters), then environment variables, then defaults.

    redis://[user:password@]host:port/db        rediss:// for TLS
    kafka://[user:password@]host:port[,host:port...][?security_protocol=SASL_SSL&sasl_mechanism=...]
    memory://[name]                             in-process; brokers with the same name share data
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from brokers.errors import ConfigurationError

__all__ = ["KafkaSettings", "MemorySettings", "RedisSettings"]

_MIB = 1024 * 1024


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None


def _common(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "max_record_bytes": int(_env_float(env, "RINGRIFT_MAX_RECORD_BYTES", _MIB)),
        "retry_budget_s": _env_float(env, "RINGRIFT_BROKER_RETRY_BUDGET", 30.0),
    }


def _build(cls: type, values: dict[str, Any], options: Mapping[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(options) - known
    if unknown:
        raise ConfigurationError(f"unknown option(s) for {cls.__name__}: {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(known))}")
    values.update(options)
    settings = cls(**values)
    if settings.max_record_bytes <= 0 or settings.retry_budget_s < 0:
        raise ConfigurationError("max_record_bytes must be > 0 and retry_budget_s >= 0")
    return settings


@dataclass(frozen=True)
class RedisSettings:
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    max_record_bytes: int = _MIB
    retry_budget_s: float = 30.0
    stream_maxlen: int = 1_000_000  # approximate MAXLEN trimming on every XADD (retention)
    block_ms: int = 500  # how long one XREADGROUP waits for new entries
    connect_timeout_s: float = 5.0
    socket_timeout_s: float = 10.0
    ssl_ca_certs: str | None = None

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None, **options: Any) -> RedisSettings:
        env = os.environ if env is None else env
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigurationError(f"not a Redis URL: {url!r} (want redis://host:port/db)")
        values: dict[str, Any] = {"url": url, **_common(env)}
        values["username"] = unquote(parts.username) if parts.username else env.get("RINGRIFT_REDIS_USERNAME")
        values["password"] = unquote(parts.password) if parts.password else env.get("RINGRIFT_REDIS_PASSWORD")
        values["ssl_ca_certs"] = env.get("RINGRIFT_REDIS_SSL_CA_CERTS") or None
        values["stream_maxlen"] = int(_env_float(env, "RINGRIFT_STREAM_MAXLEN", 1_000_000))
        return _build(cls, values, options)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_record_bytes: int = _MIB
    retry_budget_s: float = 30.0
    client_id: str = "ringrift"
    linger_ms: int = 1
    max_batch_size: int = 256 * 1024
    request_timeout_ms: int = 15_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    replication_factor: int = 1
    # How much one fetch may bring per partition. aiokafka fetches a partition again only once the
    # records of its last fetch were all handed out, and the consumer waits for that round trip: the
    # client's 1 MiB (~2,700 small events) made a busy router wait on it a third of the time.
    fetch_partition_bytes: int = 8 * _MIB
    attempt_store: Any = None  # brokers.attempts.AttemptStore, shared by the group

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None, **options: Any) -> KafkaSettings:
        env = os.environ if env is None else env
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ConfigurationError(f"not a Kafka URL: {url!r} (want kafka://host:port[,host:port])")
        hosts = parts.netloc.rpartition("@")[2]
        query = dict(parse_qsl(parts.query))
        values: dict[str, Any] = {"bootstrap_servers": hosts, **_common(env)}
        values["sasl_username"] = unquote(parts.username) if parts.username else \
            env.get("RINGRIFT_KAFKA_USERNAME") or None
        values["sasl_password"] = unquote(parts.password) if parts.password else \
            env.get("RINGRIFT_KAFKA_PASSWORD") or None
        for name in ("security_protocol", "sasl_mechanism", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = query.pop(name, None) or env.get(f"RINGRIFT_KAFKA_{name.upper()}")
            if value:
                values[name] = value
        if values["sasl_username"] and "security_protocol" not in values:
            values["security_protocol"] = "SASL_PLAINTEXT"
            values.setdefault("sasl_mechanism", "PLAIN")
        for name, raw in query.items():
            values[name] = int(raw) if raw.isdigit() else raw
        settings = _build(cls, values, options)
        if settings.security_protocol.startswith("SASL") and not (settings.sasl_mechanism and
                                                                   settings.sasl_username):
            raise ConfigurationError("SASL needs sasl_mechanism and a user (URL or RINGRIFT_KAFKA_USERNAME)")
        return settings


@dataclass(frozen=True)
class MemorySettings:
    name: str = "default"
    max_record_bytes: int = _MIB
    retry_budget_s: float = 0.0

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None, **options: Any) -> MemorySettings:
        env = os.environ if env is None else env
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"not a memory URL: {url!r}")
        values = {"name": (parts.netloc + parts.path).strip("/") or "default", **_common(env)}
        values.pop("retry_budget_s")
        return _build(cls, values, options)
