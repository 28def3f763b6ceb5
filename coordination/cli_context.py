"""Where a `coord` command's brokers are, and running its async body with a bounded retry budget.

    settings = CliSettings(timeout=5.0)            # from the root `--timeout`, else the environment
    config = settings.router_config()              # RouterConfig.from_env() with that budget
    async with settings.open_bus("cross") as broker:    # a started broker for data | stage | cross
        ...
    run(main_coroutine())                           # asyncio.run, with broker errors as CliError

The budget: `--timeout SECONDS`, else RINGRIFT_PUBLISH_RETRY_BUDGET, else 10 s (the router's 30 s
default is meant for daemons riding out an outage; a person at a terminal wants an answer sooner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import brokers
from brokers.base import Broker
from brokers.errors import BrokerError
from coordination.cli_format import CliError
from coordination.config import RouterConfig
from schemas.events import UnknownEventTypeError

__all__ = ["BUSES", "CLI_DEFAULT_BUDGET_S", "CliSettings", "run"]

BUSES = ("data", "stage", "cross")
CLI_DEFAULT_BUDGET_S = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class CliSettings:
    timeout: float | None = None  # None: RINGRIFT_PUBLISH_RETRY_BUDGET, else CLI_DEFAULT_BUDGET_S

    def router_config(self, **overrides: Any) -> RouterConfig:
        try:
            config = RouterConfig.from_env(**overrides)
            if self.timeout is not None:
                return RouterConfig.from_env(**{"publish_retry_budget_s": self.timeout, **overrides})
            if config.publish_retry_budget_s == RouterConfig.publish_retry_budget_s:  # not set in the env
                return RouterConfig.from_env(**{"publish_retry_budget_s": CLI_DEFAULT_BUDGET_S, **overrides})
            return config
        except (BrokerError, ValueError) as exc:
            raise CliError(f"configuration: {exc}") from None

    def topic_of(self, config: RouterConfig, bus: str) -> str:
        return {"data": config.data_topic, "stage": config.stage_topic, "cross": config.cross_topic}[bus]

    def broker_for(self, config: RouterConfig, bus: str) -> Broker:
        """A broker (not started) for a bus: Redis for data/stage, Kafka for cross."""
        options: dict[str, Any] = {"retry_budget_s": config.publish_retry_budget_s}
        if bus == "cross":
            if config.kafka_url is None:
                raise CliError("the cross bus is off (RINGRIFT_KAFKA_BOOTSTRAP is empty)")
            return brokers.connect(config.kafka_url, **{**options, **config.kafka_options})
        return brokers.connect(config.redis_url, **{**options, **config.redis_options})

    @contextlib.asynccontextmanager
    async def open_bus(self, config: RouterConfig, bus: str) -> AsyncIterator[Broker]:
        async with self.broker_for(config, bus) as broker:
            yield broker

    @contextlib.asynccontextmanager
    async def open_dlq_broker(self, config: RouterConfig) -> AsyncIterator[Broker]:
        """The broker holding the dead-letter topic (Kafka, or Redis when Kafka is off)."""
        async with self.open_bus(config, "cross" if config.kafka_enabled else "data") as broker:
            yield broker


def quiet_client_logs() -> None:
    """Client libraries log each failed connection attempt; the command reports the outcome once."""
    logging.basicConfig(level=logging.CRITICAL)
    for name in ("aiokafka", "kafka", "redis", "brokers", "coordination"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's async body; broker and validation errors become one-line CliErrors."""
    try:
        return asyncio.run(coro)
    except UnknownEventTypeError as exc:
        raise CliError(str(exc)) from None
    except BrokerError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}", exit_code=3) from None
