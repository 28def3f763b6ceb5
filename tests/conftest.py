"""Shared fixtures: brokers of each kind for the conformance suite (see tests/support.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from brokers.base import Broker
from tests.support import KAFKA_URL, REDIS_URL, make_broker, require_service


@pytest.fixture(autouse=True, scope="session")
def _private_coordination_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Daemon restart state (and permanent failures) of the node agents the tests start stay in the
    session's temporary directory: never in the home directory, never carried into the next run."""
    previous = os.environ.get("RINGRIFT_COORDINATION_DIR")
    os.environ["RINGRIFT_COORDINATION_DIR"] = str(tmp_path_factory.mktemp("coordination-state"))
    yield
    if previous is None:
        os.environ.pop("RINGRIFT_COORDINATION_DIR", None)
    else:
        os.environ["RINGRIFT_COORDINATION_DIR"] = previous


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """`coord`'s main() quiets these loggers for a command's run; a test calling it in-process must
    not leave them quiet for the tests after it (caplog would see nothing)."""
    names = ("aiokafka", "kafka", "redis", "brokers", "coordination", "")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(params=["memory", "redis", "kafka"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    if request.param != "memory":
        request.applymarker(pytest.mark.integration)
        require_service(REDIS_URL)
        if request.param == "kafka":
            require_service(KAFKA_URL)
    return request.param


@pytest.fixture
async def broker(broker_kind: str) -> AsyncIterator[Broker]:
    async with make_broker(broker_kind) as b:
        yield b


@pytest.fixture
def redis_service() -> str:
    """The real Redis URL; fails the test when Redis does not answer."""
    require_service(REDIS_URL)
    return REDIS_URL


@pytest.fixture
def kafka_service(redis_service: str) -> str:
    """The real Kafka URL (the Kafka broker's attempt store needs Redis too)."""
    require_service(KAFKA_URL)
    return KAFKA_URL
