"""Leader election across real processes (tests/faults/daemon_worker.py `leader`, the real Kafka):
two candidates run a leader_only PeriodicDaemon; only the leader ticks; SIGKILL the leader and the
other takes over within a bound set by the session timeout (6 s). The hand-over time is printed.

Each tick RPUSHes "<member>|<unix time>" to `<ledger>:ticks` in Redis; announcements are read back
from the namespace's cross-process topic `<ns>.events`.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import redis.asyncio as aioredis

import brokers
from tests.faults.test_consumer_daemon_processes import spawn_daemon  # noqa: F401 (a fixture)
from tests.faults.test_router_processes import worker_env
from tests.support import REDIS_URL, unique, until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SESSION_TIMEOUT_S = 6.0
HANDOVER_BOUND_S = 20.0


def _ticks(raw: list[str]) -> list[tuple[str, float]]:
    return [(member, float(at)) for member, _, at in (item.rpartition("|") for item in raw)]


async def test_only_the_leader_ticks_and_a_killed_leader_hands_over_within_the_bound(
        kafka_service: str, spawn_daemon) -> None:  # noqa: F811
    ns = unique("leader")
    ledger = f"{ns}:ledger"
    args = ("leader", "--ledger-url", REDIS_URL, "--ledger", ledger, "--interval", "0.2",
            "--session-timeout", str(SESSION_TIMEOUT_S))
    workers = [await spawn_daemon(worker_env(ns, f"node-{i}", "leader"), *args) for i in (1, 2)]
    for worker in workers:
        assert await worker.ready(), f"candidate died before READY:\n{worker.stderr_tail()}"
    members = {f"node-{i}.{w.process.pid}": w for i, w in zip((1, 2), workers, strict=True)}
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async def ticking() -> bool:
            return await redis.llen(f"{ledger}:ticks") >= 5
        await until(ticking, 60, "the leader's ticks")
        await asyncio.sleep(2.0)  # both are in the group now: still one ticker
        window = [m for m, at in _ticks(await redis.lrange(f"{ledger}:ticks", 0, -1)) if at > time.time() - 1.5]
        assert len(set(window)) == 1 and len(window) >= 3, f"ticks of the last 1.5 s: {window}"
        leader = window[-1]
        follower = next(m for m in members if m != leader)

        await members[leader].kill()
        killed_at = time.time()
        assert members[leader].process.returncode == -signal.SIGKILL

        async def taken_over() -> bool:
            ticks = _ticks(await redis.lrange(f"{ledger}:ticks", -5, -1))
            return any(m == follower and at > killed_at for m, at in ticks)
        await until(taken_over, HANDOVER_BOUND_S + 10, "the follower's first tick")
        first = min(at for m, at in _ticks(await redis.lrange(f"{ledger}:ticks", 0, -1))
                    if m == follower and at > killed_at)
        handover = first - killed_at
        print(f"\nleader hand-over after SIGKILL: {handover:.2f} s (session timeout {SESSION_TIMEOUT_S:g} s)")
        assert handover < HANDOVER_BOUND_S
        late = [m for m, at in _ticks(await redis.lrange(f"{ledger}:ticks", 0, -1)) if at > killed_at + 0.5]
        assert set(late) == {follower}
        await members[follower].stop()
    finally:
        await redis.aclose()

    async with brokers.connect(kafka_service) as kafka:
        announced = [(r.event.event_type, r.event.payload["member_id"])
                     async for r in kafka.read(f"{ns}.events") if r.event is not None]
    assert ("LEADER_ELECTED", leader) in announced and ("LEADER_ELECTED", follower) in announced, announced
    assert ("LEADER_LOST", follower) in announced, "the follower's graceful stop was not announced"
