"""`coord dlq redrive | purge` run as a user runs them (subprocesses) on real dead letters: a router in
this process whose handler fails until a flag file exists dead-letters events from the Redis data bus
and the Kafka cross bus; the CLI lists, re-drives (once, to the failed group only, resuming after being
killed halfway) and purges them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

COORD = str(Path(sys.executable).with_name("coord"))
GROUP = "cli-test.poisoned"
# Runs `coord` with UnifiedEventRouter.publish wrapped to SIGKILL the process at the Nth publish,
# "before" it is sent or "after" it was acknowledged: a re-drive interrupted at the worst moments.
KILLER = """
import os, signal, sys
from coordination import event_router
from coordination.cli import main
moment, nth = sys.argv[1], int(sys.argv[2])
original, count = event_router.UnifiedEventRouter.publish, [0]
async def publish(self, *args, **kwargs):
    count[0] += 1
    if moment == "before" and count[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    event = await original(self, *args, **kwargs)
    if moment == "after" and count[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return event
event_router.UnifiedEventRouter.publish = publish
sys.exit(main(sys.argv[3:]))
"""


def coord(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COORD, *args], env=env, capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coord: error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


@pytest.fixture
def env(kafka_service: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
            "RINGRIFT_NAMESPACE": unique("redrive"), "RINGRIFT_COORDINATION_DIR": str(tmp_path / "state")}


class Consumer:
    """A router in group `<node>.<service>`; its handler fails until `flag` exists (None: never fails)."""

    def __init__(self, env: dict[str, str], service: str, flag: Path | None, buses: frozenset[str]) -> None:
        self.flag = flag
        self.handled: list[RouterEvent] = []
        self.router = UnifiedEventRouter(RouterConfig.from_env(
            redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP, namespace=env["RINGRIFT_NAMESPACE"],
            node_id="cli-test", service_name=service, max_attempts=1, start_position="earliest",
            read_buses=buses, redis_options={"block_ms": 100},
            kafka_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}))
        self.router.subscribe(None, self.handle)

    def handle(self, event: RouterEvent) -> None:
        if self.flag is not None and not self.flag.exists():
            raise (KeyError if event.event_type == "TRAINING_COMPLETED" else ValueError)(
                f"bad checkpoint 42 in {event.event_id}")
        self.handled.append(event)

    def times_handled(self, original: RouterEvent) -> int:
        return sum(1 for e in self.handled if original.event_id in (e.event_id, e.parent_event_id))

    async def dead_letters(self, count: int) -> None:
        await until(lambda: self.router.get_stats()["dead_lettered"] >= count, what=f"{count} dead letters")


@asynccontextmanager
async def consumer(env: dict[str, str], tmp_path: Path, service: str = "poisoned", *, fails: bool = True,
                   buses: frozenset[str] = frozenset({"data"})) -> AsyncIterator[Consumer]:
    made = Consumer(env, service, tmp_path / "fixed" if fails else None, buses)
    await made.router.start()
    try:
        yield made
    finally:
        await made.router.stop()


async def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(coord, env, *args)


async def listed(env: dict[str, str], *args: str) -> dict[str, str]:
    """dead letter id -> status, from `coord dlq list --json`."""
    result = await run(env, "dlq", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return {row["dead_letter_id"]: row["status"] for row in json.loads(result.stdout)}


async def publish(c: Consumer, event_type: str, n: int, bus: str = "data") -> RouterEvent:
    return await c.router.publish(event_type, {"config_key": "hex8_2p", "n": n}, source="test",
                                  route_to_data_bus=bus == "data", route_to_stage_bus=False,
                                  route_to_cross_process=bus == "cross")


async def test_redrive_on_both_buses_runs_the_failed_group_once_and_never_twice(env: dict[str, str],
                                                                                tmp_path: Path) -> None:
    both = frozenset({"data", "cross"})
    async with consumer(env, tmp_path, buses=both) as poisoned, \
            consumer(env, tmp_path, "healthy", fails=False, buses=both) as healthy:
        on_data = await publish(poisoned, "MODEL_PROMOTED", 1, "data")
        on_cross = await publish(poisoned, "MODEL_PROMOTED", 2, "cross")
        await poisoned.dead_letters(2)
        await until(lambda: len(healthy.handled) == 2)
        letters = json.loads((await run(env, "dlq", "list", "--json")).stdout)
        assert [row["status"] for row in letters] == ["pending", "pending"]
        [data_id] = [row["dead_letter_id"] for row in letters if row["event_id"] == on_data.event_id]
        shown = (await run(env, "dlq", "show", data_id[:8])).stdout
        assert "state:          pending" in shown and "history" in shown

        (tmp_path / "fixed").touch()
        first = await run(env, "dlq", "redrive", data_id[:8])
        assert first.returncode == 0, first.stderr
        assert f"redriven        {data_id}  MODEL_PROMOTED to {GROUP}" in first.stdout
        await until(lambda: poisoned.times_handled(on_data) == 1)
        redriven = next(e for e in poisoned.handled if e.parent_event_id == on_data.event_id)
        assert redriven.target_group == GROUP and redriven.trace_id == on_data.trace_id
        assert (await listed(env))[data_id] == "redriven"
        history = json.loads((await run(env, "dlq", "show", data_id, "--json")).stdout)["status"]
        assert [h["state"] for h in history["history"]] == ["pending", "redriving", "redriven"]
        assert history["redriven_as"] == redriven.event_id and history["redriven_by"].startswith("cli@")

        again = await run(env, "dlq", "redrive", data_id)
        assert again.returncode == 0 and "already redriven" in again.stdout and "nothing to re-drive" in again.stdout
        rest = await run(env, "dlq", "redrive", "--all")
        assert "1 re-driven, 1 skipped" in rest.stdout, rest.stdout
        await until(lambda: poisoned.times_handled(on_cross) == 1)
        assert set((await listed(env)).values()) == {"redriven"}

        # a later event on the same buses and keys is handled by both groups: the re-drives came before it
        for n, bus in ((10, "data"), (11, "cross")):
            await publish(healthy, "MODEL_PROMOTED", n, bus)
        await until(lambda: len(healthy.handled) == 4)
        await until(lambda: sum(e.payload["n"] >= 10 for e in poisoned.handled) == 2)
        assert [healthy.times_handled(e) for e in (on_data, on_cross)] == [1, 1]  # the healthy group skipped them
        assert [poisoned.times_handled(e) for e in (on_data, on_cross)] == [1, 1]


async def test_selection_by_type_fingerprint_and_all_and_dry_run_changes_nothing(env: dict[str, str],
                                                                                 tmp_path: Path) -> None:
    async with consumer(env, tmp_path) as poisoned:
        promoted = [await publish(poisoned, "MODEL_PROMOTED", n) for n in range(2)]
        trained = [await publish(poisoned, "TRAINING_COMPLETED", n) for n in range(2)]
        await poisoned.dead_letters(4)
        (tmp_path / "fixed").touch()
        before = await listed(env)

        dry = await run(env, "dlq", "redrive", "--all", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["dry_run"] and len(report["would_redrive"]) == 4
        assert "dry run: 4 would be re-driven" in (await run(env, "dlq", "redrive", "--all", "--dry-run")).stdout
        await asyncio.sleep(1.0)
        assert await listed(env) == before and poisoned.handled == []

        by_type = json.loads((await run(env, "dlq", "redrive", "--type", "model_promoted", "--json")).stdout)
        assert len(by_type["redriven"]) == 2 and {r["event_type"] for r in by_type["redriven"]} == {"MODEL_PROMOTED"}
        await until(lambda: all(poisoned.times_handled(e) == 1 for e in promoted))
        by_fingerprint = await run(env, "dlq", "redrive", "--fingerprint", "KeyError:")
        assert "2 re-driven, 0 skipped" in by_fingerprint.stdout, by_fingerprint.stdout
        await until(lambda: all(poisoned.times_handled(e) == 1 for e in trained))
        assert "4 skipped" in (await run(env, "dlq", "redrive", "--all")).stdout
        await asyncio.sleep(1.0)
        assert Counter(e.parent_event_id for e in poisoned.handled) == Counter(e.event_id for e in promoted + trained)
        assert json.loads((await run(env, "dlq", "stats", "--json")).stdout)["by_status"] == {"redriven": 4}

        assert_one_line_error(await run(env, "dlq", "redrive", ""), "matches 4 dead letters")  # prefix of all
        assert_one_line_error(await run(env, "dlq", "redrive", "--type", "HOST_OFFLINE"), "no dead letter matches")
        assert_one_line_error(await run(env, "dlq", "redrive", "--fingerprint", "OSError"), "no dead letter matches")


async def test_an_interrupted_redrive_resumes_and_handles_every_event_exactly_once(env: dict[str, str],
                                                                                   tmp_path: Path) -> None:
    async with consumer(env, tmp_path) as poisoned:
        events = [await publish(poisoned, "MODEL_PROMOTED", n) for n in range(4)]
        await poisoned.dead_letters(4)
        (tmp_path / "fixed").touch()
        order = list(await listed(env))  # oldest first: the order of the re-drive

        def killed(moment: str, nth: int) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", KILLER, moment, str(nth), "dlq", "redrive", "--all"],
                                  env=env, capture_output=True, text=True, timeout=60)

        # 1: killed right after the 2nd publish was acknowledged, before its letter was marked redriven
        assert (await asyncio.to_thread(killed, "after", 2)).returncode == -signal.SIGKILL
        states = await listed(env)
        assert [states[i] for i in order] == ["redriven", "redriving", "pending", "pending"]
        await until(lambda: len(poisoned.handled) == 2)
        duplicates = poisoned.router.get_stats()["duplicates_prevented"]

        # 2: the resumed letter re-publishes its recorded id first (dropped by dedup), then killed
        # before the 3rd letter's publish, its intent already written
        assert (await asyncio.to_thread(killed, "before", 2)).returncode == -signal.SIGKILL
        states = await listed(env)
        assert [states[i] for i in order] == ["redriven", "redriven", "redriving", "pending"]
        await until(lambda: poisoned.router.get_stats()["duplicates_prevented"] == duplicates + 1)

        finished = await run(env, "dlq", "redrive", "--all")
        assert finished.returncode == 0, finished.stderr
        assert f"resumed         {order[2]}" in finished.stdout and "2 re-driven, 2 skipped" in finished.stdout
        await until(lambda: len(poisoned.handled) == 4)
        await asyncio.sleep(1.0)
        assert [poisoned.times_handled(e) for e in events] == [1, 1, 1, 1]
        assert set((await listed(env)).values()) == {"redriven"}


async def test_purge_by_id_status_and_age(env: dict[str, str], tmp_path: Path) -> None:
    async with consumer(env, tmp_path) as poisoned:
        for n in range(3):
            await publish(poisoned, "MODEL_PROMOTED", n)
        await poisoned.dead_letters(3)
        first, second, third = await listed(env)

        purged = await run(env, "dlq", "purge", first[:8])
        assert purged.returncode == 0 and f"purged          {first}" in purged.stdout
        assert list(await listed(env)) == [second, third]
        assert await listed(env, "--status", "purged") == {first: "purged"}
        assert list(await listed(env, "--all-states")) == [first, second, third]
        assert "skipped         " + first + "  purged" in (await run(env, "dlq", "redrive", first)).stdout
        assert "already purged" in (await run(env, "dlq", "purge", first)).stdout

        (tmp_path / "fixed").touch()
        assert (await run(env, "dlq", "redrive", second)).returncode == 0
        assert json.loads((await run(env, "dlq", "purge", "--status", "redriven", "--json")).stdout)["purged"] == [
            second]
        assert_one_line_error(await run(env, "dlq", "purge", "--older-than", "1h"), "no dead letter matches")
        dry = await run(env, "dlq", "purge", "--older-than", "0s", "--dry-run")
        assert f"would purge     {third}" in dry.stdout and "nothing changed" in dry.stdout
        assert list(await listed(env)) == [third]
        assert "1 purged" in (await run(env, "dlq", "purge", "--older-than", "0s")).stdout
        assert await listed(env) == {}
        stats = json.loads((await run(env, "dlq", "stats", "--json")).stdout)
        assert stats["total"] == 0 and stats["purged"] == 3


def test_bad_input_is_one_line_and_non_zero(env: dict[str, str]) -> None:
    assert_one_line_error(coord(env, "dlq", "redrive"), "say which dead letters")
    assert_one_line_error(coord(env, "dlq", "redrive", "abc", "--all"), "not together")
    assert_one_line_error(coord(env, "dlq", "redrive", "--all", "--type", "MODEL_PROMOTED"), "not together")
    assert_one_line_error(coord(env, "dlq", "redrive", "no-such-id"), "no dead letter 'no-such-id'")
    assert_one_line_error(coord(env, "dlq", "redrive", "--all"), "no dead letters")
    assert_one_line_error(coord(env, "dlq", "purge"), "say which dead letters")
    assert_one_line_error(coord(env, "dlq", "purge", "--older-than", "7 fortnights"), "bad duration")
    assert_one_line_error(coord(env, "dlq", "purge", "--status", "lost"), "--status")
    assert_one_line_error(coord(env, "dlq", "list", "--status", "lost"), "--status")
    started = time.monotonic()
    no_kafka = coord({**env, "RINGRIFT_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, "--timeout", "2", "dlq", "redrive", "--all")
    assert_one_line_error(no_kafka, "BrokerUnavailable")
    assert no_kafka.returncode == 3 and time.monotonic() - started < 30
    no_redis = coord({**env, "RINGRIFT_REDIS_URL": "redis://127.0.0.1:1/0"}, "--timeout", "2", "dlq", "list")
    assert_one_line_error(no_redis, "Redis unreachable")
    assert no_redis.returncode == 3
