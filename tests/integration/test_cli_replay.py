"""`coord replay` run as a user runs it (a subprocess of .venv/bin/coord) against real Redis and Kafka.

A consumer group (a router with a handler, in this process) handles a range once; stopped, the range
is replayed to it with `coord replay --to-group`; started again, its handler runs once more for each
event of the range and for nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

import brokers
from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.integration.test_cli_commands import assert_one_line_error, coord
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODE = "replay-test"
GROUP = f"{NODE}.worker"  # the router's group: <node_id>.<service_name>
BEFORE, RANGE, AFTER = range(0, 3), range(3, 7), range(7, 9)


@pytest.fixture
def env(kafka_service: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
            "RINGRIFT_NAMESPACE": unique("replay"), "RINGRIFT_COORDINATION_DIR": str(tmp_path / "state")}


async def _coord(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`coord` in a thread, so that the group member in this process keeps running meanwhile."""
    return await asyncio.to_thread(coord, env, *args)


def _config(namespace: str, service: str, bus: str) -> RouterConfig:
    return RouterConfig(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP if bus == "cross" else None,
                        namespace=namespace, node_id=NODE, service_name=service, start_position="earliest",
                        read_buses=frozenset({bus}), publish_retry_budget_s=10)


def _event_type(n: int) -> str:
    return "MODEL_PROMOTED" if n in (4, 6) else "TRAINING_COMPLETED"


def _worker(namespace: str, bus: str, handled: Counter[int]) -> UnifiedEventRouter:
    """A member of GROUP whose handler counts the events it handles, by their payload's n."""
    router = UnifiedEventRouter(_config(namespace, "worker", bus))

    def count(event: RouterEvent) -> None:
        handled[event.payload["n"]] += 1

    router.subscribe(None, count)
    return router


async def _publish_phases(namespace: str, bus: str) -> tuple[str, str]:
    """Events BEFORE the range, in it (between the two times returned), AFTER it."""
    publisher = UnifiedEventRouter(_config(namespace, "publisher", bus))
    marks: list[str] = []
    try:
        for n in range(9):
            if n in (RANGE.start, AFTER.start):
                await asyncio.sleep(0.1)
                marks.append(datetime.now(UTC).isoformat())
                await asyncio.sleep(0.05)
            await publisher.publish(_event_type(n), {"n": n}, source="replay-test", key=f"k{n}",
                                    route_to_data_bus=bus == "data", route_to_stage_bus=False,
                                    route_to_cross_process=bus == "cross")
    finally:
        await publisher.stop()
    return marks[0], marks[1]


async def _until_group(bus: str, namespace: str, done: Callable[[int, int], bool], what: str) -> None:
    """Wait until done(members, records behind) holds for GROUP, read from the broker."""
    config = _config(namespace, "probe", bus)
    topic = config.cross_topic if bus == "cross" else config.data_topic
    async with brokers.connect(config.kafka_url if bus == "cross" else REDIS_URL) as broker:
        lag = await broker.group_lag(topic, GROUP)
        deadline = asyncio.get_running_loop().time() + 30
        while not done(lag.members, lag.behind):
            assert asyncio.get_running_loop().time() < deadline, f"{what}: {lag}"
            await asyncio.sleep(0.2)
            lag = await broker.group_lag(topic, GROUP)


async def test_replay_a_range_to_a_group_on_the_data_bus(env: dict[str, str]) -> None:
    namespace, handled = env["RINGRIFT_NAMESPACE"], Counter[int]()
    worker = _worker(namespace, "data", handled)
    await worker.start()
    try:
        since, end = await _publish_phases(namespace, "data")
        await until(lambda: sum(handled.values()) == 9, what="the first handling")
        refused = await _coord(env, "replay", "--bus", "data", "--since", since, "--to-group", GROUP)
        assert_one_line_error(refused, "1 member(s)", "--force")
    finally:
        await worker.stop()
    await _until_group("data", namespace, lambda members, _: members == 0, "the stopped member to count as gone")

    printed = await _coord(env, "replay", "--bus", "data", "--since", since, "--until", end, "--print", "--json")
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line)["event"]["payload"]["n"] for line in printed.stdout.splitlines()] == list(RANGE)
    dry = await _coord(env, "replay", "--bus", "data", "--since", since, "--until", end, "--to-group", GROUP,
                       "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert (report["records"], report["events"], report["epoch"], report["dry_run"]) == ({"stream": 4}, 4, None, True)

    moved = await _coord(env, "replay", "--bus", "data", "--since", since, "--until", end, "--to-group", GROUP)
    assert moved.returncode == 0, moved.stderr
    assert "4 record(s) will be delivered" in moved.stdout and "replay epoch 1" in moved.stdout

    worker = _worker(namespace, "data", handled)
    await worker.start()
    try:
        await until(lambda: all(handled[n] == 2 for n in RANGE), what="the replay")
        await _until_group("data", namespace, lambda _, behind: behind == 0, "the group to catch up")
    finally:
        await worker.stop()
    assert handled == {**{n: 1 for n in BEFORE}, **{n: 2 for n in RANGE}, **{n: 1 for n in AFTER}}


async def test_replay_only_some_types_to_a_group_on_kafka(env: dict[str, str]) -> None:
    namespace, handled = env["RINGRIFT_NAMESPACE"], Counter[int]()
    worker = _worker(namespace, "cross", handled)
    await worker.start()
    try:
        since, _ = await _publish_phases(namespace, "cross")
        await until(lambda: sum(handled.values()) == 9, what="the first handling")
        for force in ((), ("--force",)):
            refused = await _coord(env, "replay", "--bus", "cross", "--since", since, "--to-group", GROUP, *force)
            assert_one_line_error(refused, "only while it is empty")
    finally:
        await worker.stop()
    await _until_group("cross", namespace, lambda members, _: members == 0, "the group to be empty")

    dry = await _coord(env, "replay", "--bus", "cross", "--since", since, "--to-group", GROUP,
                       "--type", "model_promoted", "--dry-run", "--json")
    report = json.loads(dry.stdout)
    assert sum(report["records"].values()) == 6 and report["events"] == 2  # records 3-8; events 4, 6
    assert set(report["records"]) == {"0", "1", "2"}
    moved = await _coord(env, "replay", "--bus", "cross", "--since", since, "--to-group", GROUP,
                         "--type", "MODEL_PROMOTED")
    assert moved.returncode == 0, moved.stderr
    assert "2 event(s) pass its dedup once more" in moved.stdout

    worker = _worker(namespace, "cross", handled)
    await worker.start()
    try:
        await until(lambda: handled[4] == 2 and handled[6] == 2, what="the replay")
        await _until_group("cross", namespace, lambda _, behind: behind == 0, "the group to catch up")
    finally:
        await worker.stop()
    assert handled == {n: 2 if n in (4, 6) else 1 for n in range(9)}


def test_bad_input_is_one_line_and_non_zero(env: dict[str, str]) -> None:
    replay = ("replay", "--bus", "data", "--since", "10m")
    assert_one_line_error(coord(env, "replay", "--bus", "data", "--since", "yesterday", "--print"), "bad time")
    assert_one_line_error(coord(env, "replay", "--bus", "nope", "--since", "10m", "--print"), "--bus")
    assert_one_line_error(coord(env, *replay), "either --print or --to-group")
    assert_one_line_error(coord(env, *replay, "--print", "--dry-run"), "go with --to-group")
    assert_one_line_error(coord(env, *replay, "--until", "1h", "--print"), "before --since")
    assert_one_line_error(coord(env, *replay, "--to-group", GROUP), "nothing was ever published")
    assert coord(env, "publish", "TRAINING_COMPLETED", "--bus", "data").returncode == 0
    assert_one_line_error(coord(env, *replay, "--to-group", "nobody"), "'nobody' has never read")
    down = {**env, "RINGRIFT_REDIS_URL": "redis://127.0.0.1:1/0", "RINGRIFT_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    assert_one_line_error(coord(down, "--timeout", "1", *replay, "--to-group", GROUP), "BrokerUnavailable")
    assert_one_line_error(coord(down, "--timeout", "1", "replay", "--bus", "cross", "--since", "1h", "--print"),
                          "BrokerUnavailable")
