"""The event router's configuration: frozen data, built by `RouterConfig.from_env()`.

`from_env` is the only place in `coordination/` that reads `os.environ`. Everything else receives a
`RouterConfig`, so a test builds one directly (`RouterConfig(redis_url="memory://x", ...)`).

    RINGRIFT_REDIS_URL               redis://127.0.0.1:6379/0   per-node bus (data, stage), dedup store
    RINGRIFT_KAFKA_BOOTSTRAP         127.0.0.1:9092             cross-process bus; "" or "none": off;
                                                                "memory://name": in-process broker
    RINGRIFT_NAMESPACE               ringrift
    RINGRIFT_NODE_ID                 the host name
    RINGRIFT_SERVICE_NAME            router
    RINGRIFT_CONSUMER_NAME           <node_id>.<service_name>  (set it when several processes of one
                                                                service run on one node)
    RINGRIFT_DEDUP_WINDOW_SECONDS    30     content-hash window
    RINGRIFT_EVENT_HANDLER_TIMEOUT   600    seconds, async and sync handlers
    RINGRIFT_HANDLER_MAX_ATTEMPTS    3      attempts per handler before the dead letter
    RINGRIFT_MAX_DELIVERIES          5      deliveries of one record before a "crash" dead letter
    RINGRIFT_CONSUME_BATCH           128    deliveries claimed (one batch ahead) and committed per dedup round trip
    RINGRIFT_DEDUP_EXEMPT_TYPES      comma list of types never content-deduplicated
    RINGRIFT_ROUTER_START            latest | earliest: where a new consumer group starts
    RINGRIFT_EVENT_VALIDATION_STRICT read by schemas.events (strict validation)
    RINGRIFT_PUBLISH_RETRY_BUDGET    30     seconds a publish retries an unreachable bus (the brokers
                                            are connected with this retry_budget_s unless their
                                            options set one)
    RINGRIFT_SPOOL_DIR               unset  when set: a publish that ran out of budget is written to
                                            this durable spool and drained later (coordination.spool);
                                            one directory per process

Names: data stream `<ns>:data`, stage stream `<ns>:stage`, cross-process topic `<ns>.events`, dead
letters `<ns>.dlq` on Kafka or `<ns>:dlq` on Redis when Kafka is off. The consumer group of a router
is `<node_id>.<service_name>` on every bus, so each node's router receives every cross-process event.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from brokers.errors import ConfigurationError
from schemas.events import normalize_event_type, validation_config

__all__ = ["DEFAULT_DEDUP_EXEMPT_TYPES", "RouterConfig"]

# Periodic events whose identical repetition is legitimate: never content-deduplicated.
DEFAULT_DEDUP_EXEMPT_TYPES: frozenset[str] = frozenset({
    "COORDINATOR_HEARTBEAT", "TASK_HEARTBEAT", "TRAINING_HEARTBEAT", "METRICS_UPDATED",
    "TRAINING_PROGRESS", "EVALUATION_PROGRESS", "HEALTH_CHECK_PASSED",
})
_OFF = ("", "none", "off", "false", "0")


@dataclass(frozen=True)
class RouterConfig:
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str | None = "127.0.0.1:9092"  # None: no cross-process bus
    namespace: str = "ringrift"
    node_id: str = field(default_factory=socket.gethostname)
    service_name: str = "router"
    consumer_name: str = ""  # "" -> <node_id>.<service_name>
    group_name: str = ""  # "" -> <node_id>.<service_name>; daemons name their group after their type
    read_buses: frozenset[str] = frozenset({"data", "stage", "cross"})  # the buses start() reads
    dedup_window_s: float = 30.0
    dedup_id_ttl_s: float = 24 * 3600.0
    dedup_cache_size: int = 10_000
    dedup_exempt_types: frozenset[str] = DEFAULT_DEDUP_EXEMPT_TYPES
    handler_timeout_s: float = 600.0
    max_attempts: int = 3
    retry_initial_s: float = 0.5  # tenacity exponential back-off with jitter between attempts
    retry_max_s: float = 30.0
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000  # a delivery pending this long on a dead member goes to another
    # Deliveries handled per dedup round trip. A process killed mid-batch may run again the handlers
    # of up to this many events per bus whose handling finished uncommitted; 1: one in flight.
    consume_batch: int = 128
    cross_process_partitions: int = 3
    start_position: Literal["earliest", "latest"] = "latest"
    strict_validation: bool = False
    history_size: int = 1000
    publish_retry_budget_s: float = 30.0
    spool_dir: str | None = None  # None: no spool, an unreachable bus makes publish raise
    spool_probe_timeout_s: float = 5.0  # one probe of a down broker by the spool drainer
    spool_backoff_max_s: float = 5.0  # the drainer's back-off between probes grows up to this
    redis_options: Mapping[str, Any] = field(default_factory=dict)  # extra brokers.connect options
    kafka_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.namespace or not self.node_id or not self.service_name:
            raise ConfigurationError("namespace, node_id and service_name must not be empty")
        if self.max_attempts < 1 or self.max_deliveries < 1 or self.dedup_cache_size < 0 or self.consume_batch < 1:
            raise ConfigurationError("max_attempts, max_deliveries and consume_batch must be >= 1, "
                                     "dedup_cache_size >= 0")
        if self.handler_timeout_s <= 0 or self.dedup_window_s < 0:
            raise ConfigurationError("handler_timeout_s must be > 0 and dedup_window_s >= 0")
        if self.publish_retry_budget_s < 0 or self.spool_probe_timeout_s <= 0 or self.spool_backoff_max_s <= 0:
            raise ConfigurationError("publish_retry_budget_s must be >= 0, the spool's probe timeout and "
                                     "back-off > 0")
        if self.spool_dir is not None and not self.spool_dir.strip():
            object.__setattr__(self, "spool_dir", None)
        if self.start_position not in ("earliest", "latest"):
            raise ConfigurationError(f"start_position {self.start_position!r}: use earliest or latest")
        if self.kafka_bootstrap is not None and self.kafka_bootstrap.strip().lower() in _OFF:
            object.__setattr__(self, "kafka_bootstrap", None)
        exempt = frozenset(normalize_event_type(t, strict=False) for t in self.dedup_exempt_types)
        object.__setattr__(self, "dedup_exempt_types", exempt)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RouterConfig:
        """Read the RINGRIFT_* variables (see the module docstring); `overrides` win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"strict_validation": validation_config().strict}
        text = {"redis_url": "RINGRIFT_REDIS_URL", "kafka_bootstrap": "RINGRIFT_KAFKA_BOOTSTRAP",
                "namespace": "RINGRIFT_NAMESPACE", "node_id": "RINGRIFT_NODE_ID",
                "service_name": "RINGRIFT_SERVICE_NAME", "consumer_name": "RINGRIFT_CONSUMER_NAME",
                "start_position": "RINGRIFT_ROUTER_START", "spool_dir": "RINGRIFT_SPOOL_DIR"}
        for name, var in text.items():
            if var in env:
                values[name] = env[var].strip()
        numbers = {"dedup_window_s": "RINGRIFT_DEDUP_WINDOW_SECONDS",
                   "handler_timeout_s": "RINGRIFT_EVENT_HANDLER_TIMEOUT",
                   "max_attempts": "RINGRIFT_HANDLER_MAX_ATTEMPTS", "max_deliveries": "RINGRIFT_MAX_DELIVERIES",
                   "consume_batch": "RINGRIFT_CONSUME_BATCH",
                   "publish_retry_budget_s": "RINGRIFT_PUBLISH_RETRY_BUDGET"}
        for name, var in numbers.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    number = float(raw)
                except ValueError:
                    raise ConfigurationError(f"{var}={raw!r} is not a number") from None
                values[name] = int(number) if name in ("max_attempts", "max_deliveries", "consume_batch") else number
        if "RINGRIFT_DEDUP_EXEMPT_TYPES" in env:
            values["dedup_exempt_types"] = frozenset(
                t.strip() for t in env["RINGRIFT_DEDUP_EXEMPT_TYPES"].split(",") if t.strip())
        values.update(overrides)
        return cls(**values)

    # -- derived names -----------------------------------------------------------------------------

    @property
    def kafka_enabled(self) -> bool:
        return self.kafka_bootstrap is not None

    @property
    def kafka_url(self) -> str | None:
        """The brokers.connect URL of the cross-process bus (memory:// passes through)."""
        if self.kafka_bootstrap is None:
            return None
        if "://" in self.kafka_bootstrap:
            return self.kafka_bootstrap
        return f"kafka://{self.kafka_bootstrap}"

    @property
    def data_topic(self) -> str:
        return f"{self.namespace}:data"

    @property
    def stage_topic(self) -> str:
        return f"{self.namespace}:stage"

    @property
    def cross_topic(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dlq_topic(self) -> str:
        return f"{self.namespace}.dlq" if self.kafka_enabled else f"{self.namespace}:dlq"

    @property
    def group(self) -> str:
        """The consumer group of this router on every bus (and the dedup store's scope)."""
        return self.group_name or f"{self.node_id}.{self.service_name}"

    @property
    def consumer(self) -> str:
        """This process's member name in the group: stable, so a restarted process resumes."""
        return self.consumer_name or self.group
