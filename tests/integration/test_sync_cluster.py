"""Three node agents as processes (`coord node run`), each with its own data directory and its own
Redis, one Kafka: the sync facade's control plane across real nodes.

A is a coordinator (MODEL_DISTRIBUTION), B and C training nodes; every node runs DATA_SERVER and
AUTO_SYNC, whose gossip is limited to npz files here so that the games and models of the tests move
only when asked. The nodes' Redis servers run on private ports 6381-6383 (tests.support.private_redis).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import brokers
from coordination.config import RouterConfig
from coordination.event_router import UnifiedEventRouter
from coordination.sync_facade import SyncBackend, SyncFacade, SyncRequest
from coordination.sync_settings import SyncSettings
from tests.support import KAFKA_BOOTSTRAP, KAFKA_URL, REDIS_URL, private_redis, require_service, unique

pytestmark = pytest.mark.integration

NODE_REDIS_PORTS = (6381, 6382, 6383)  # private: one Redis per node
SECRET = "sync-cluster-test-secret"
PROFILES = {"A": "coordinator", "B": "training_node", "C": "training_node"}


@dataclass
class Agent:
    name: str
    data: Path
    process: subprocess.Popen[str]
    log: Path


@dataclass
class Cluster:
    namespace: str
    agents: dict[str, Agent]

    def data(self, name: str) -> Path:
        return self.agents[name].data


def _ready_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for url in (REDIS_URL, KAFKA_URL):
        require_service(url)
    with private_redis(*NODE_REDIS_PORTS) as node_redis:
        yield from _cluster(tmp_path_factory, node_redis)


def _cluster(tmp_path_factory: pytest.TempPathFactory, node_redis: list[str]) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("sync-cluster")
    namespace = unique("synccl")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_")}
    agents: dict[str, Agent] = {}
    for (name, profile), redis_url in zip(PROFILES.items(), node_redis, strict=True):
        data, log = root / name, root / f"{name}.log"
        env = {**base, "RINGRIFT_REDIS_URL": redis_url, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
               "RINGRIFT_NAMESPACE": namespace, "RINGRIFT_DATA_DIR": str(data), "RINGRIFT_CLUSTER_SECRET": SECRET,
               "RINGRIFT_DATA_PORT": "0", "RINGRIFT_COORDINATION_DIR": str(root / f"{name}-state"),
               "RINGRIFT_AUTO_SYNC_INTERVAL": "1", "RINGRIFT_MIN_SYNC_INTERVAL": "0.2",
               "RINGRIFT_SYNC_SCAN_INTERVAL": "0.3", "RINGRIFT_AUTO_SYNC_DATA_TYPES": "npz",
               "RINGRIFT_AUTO_SYNC_MAX_CONCURRENT": "2", "RINGRIFT_PUBLISH_RETRY_BUDGET": "10"}
        process = subprocess.Popen(
            [sys.executable, "-m", "coordination.cli", "node", "run", "--profile", profile, "--node-id", name,
             "--health-port", "0", "--heartbeat-interval", "1", "--log-level", "info"],
            env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        agents[name] = Agent(name, data, process, log)
    try:
        for agent in agents.values():
            line = _ready_line(agent.process, 60)
            assert f"node {agent.name} ready" in line, f"{agent.name}: {line!r}\n{agent.log.read_text()[-3000:]}"
        yield Cluster(namespace, agents)
    finally:
        for agent in agents.values():
            if agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        for agent in agents.values():
            try:
                agent.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()


@pytest.fixture
async def facade(cluster: Cluster) -> AsyncIterator[SyncFacade]:
    router = UnifiedEventRouter(RouterConfig(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP,
                                             namespace=cluster.namespace, node_id="ops", publish_retry_budget_s=10))
    made = SyncFacade(router, SyncSettings(secret=SECRET), poll_interval_s=0.2)
    deadline = time.monotonic() + 30
    while not {"A", "B", "C"} <= {n for n, r in (await made.peers()).items() if r.is_live()}:
        assert time.monotonic() < deadline, f"sync peers seen: {await made.peers()}"
        await asyncio.sleep(0.2)
    yield made
    await made.close()
    await router.stop()


def write(directory: Path, relative: str, size: int) -> str:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(relative.encode()).digest() * 4096
    path.write_bytes((block * (size // len(block) + 1))[:size])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


async def eventually(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s:g} s"
        await asyncio.sleep(0.1)


async def test_games_from_a_reach_b_and_c_with_confirmation_and_true_byte_counts(
        cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.data("A"), "games/hex8_2p_a.db", 2_000_000)
    response = await facade.sync(SyncRequest(data_type="games", targets=["B", "C"], require_confirmation=True,
                                             timeout_seconds=30))
    assert response.success, response.errors
    assert response.backend_used is SyncBackend.ROUTER
    assert response.nodes_synced == 2 and response.bytes_transferred == 4_000_000
    for name in ("B", "C"):
        node = response.details["nodes"][name]
        assert (node["status"], node["files"], node["bytes_transferred"]) == ("completed", 1, 2_000_000)
        assert digest(cluster.data(name) / "games/hex8_2p_a.db") == sha


async def test_exclude_nodes_leaves_a_node_out(cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.data("A"), "games/square8_2p_ex.db", 300_000)
    response = await facade.sync("games", exclude_nodes=["C"], board_type="square8", require_confirmation=True,
                                 timeout_seconds=30)
    assert response.success, response.errors
    assert response.backend_used is SyncBackend.AUTO_SYNC and response.details["targets"] == ["A", "B"]
    assert response.bytes_transferred == 300_000 and (cluster.data("B") / "games/square8_2p_ex.db").exists()
    assert not (cluster.data("C") / "games/square8_2p_ex.db").exists()


def test_coord_sync_shows_each_nodes_progress(cluster: Cluster) -> None:
    write(cluster.data("A"), "games/hex6_2p_cli.db", 100_000)
    env = {**os.environ, "RINGRIFT_NAMESPACE": cluster.namespace, "RINGRIFT_NODE_ID": "ops-cli",
           "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP}
    shown = subprocess.run([sys.executable, "-m", "coordination.cli", "sync", "games", "--to", "B", "--to", "C",
                            "--board-type", "hex6", "--timeout-seconds", "30"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    for node in ("B", "C"):
        assert any(line.startswith(f"{node}  started  1 planned  100.0 kB planned") for line in lines), lines
        assert any(line.startswith(f"{node}  completed  1  100.0 kB  ") and "Mbit/s" in line for line in lines), lines
    assert "router: 2/2 node(s) confirmed, 200.0 kB in " in shown.stdout
    again = subprocess.run([sys.executable, "-m", "coordination.cli", "sync", "games", "--to", "B", "--board-type",
                            "hex6", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["success"] and answer["bytes_transferred"] == 0 and answer["details"]["nodes"]["B"]["files"] == 0


async def test_two_requests_for_the_same_file_at_once_transfer_it_once(cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.data("A"), "games/hex8_3p_dup.db", 8_000_000)
    request = {"data_type": "games", "targets": ["B"], "num_players": 3, "require_confirmation": True,
               "timeout_seconds": 30, "bandwidth_limit_mbps": 160}
    first, second = await asyncio.gather(facade.sync(dict(request)), facade.sync(dict(request)))
    assert first.success and second.success, (first.errors, second.errors)
    assert first.bytes_transferred + second.bytes_transferred == 8_000_000
    assert sorted(r.details["nodes"]["B"]["files"] for r in (first, second)) == [0, 1]
    assert digest(cluster.data("B") / "games/hex8_3p_dup.db") == sha


async def test_gossip_pulls_a_file_that_appeared_on_a_without_any_request(cluster: Cluster) -> None:
    sha = write(cluster.data("A"), "npz/hex8_2p_gossip.npz", 500_000)
    await eventually(lambda: all(digest(cluster.data(n) / "npz/hex8_2p_gossip.npz") == sha for n in ("B", "C")),
                     20, "the gossip pull on B and C")


async def test_model_distribution_after_a_promotion(cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.data("A"), "models/canonical_hex8_2p.pth", 1_000_000)
    async with brokers.connect(KAFKA_URL) as kafka:
        topic = f"{cluster.namespace}.events"

        async def seen(event_type: str, since: float) -> list[dict[str, object]]:
            from datetime import UTC, datetime

            return [r.event.payload async for r in kafka.read(topic, since=datetime.fromtimestamp(since, UTC))
                    if r.event is not None and r.event.event_type == event_type]

        # MODEL_DISTRIBUTION's consumer group starts at the newest record once it joined: promote a
        # model without a path until its MODEL_DISTRIBUTION_FAILED shows the group reads the bus.
        started = time.time()
        for attempt in range(60):
            await facade.router.publish("MODEL_PROMOTED", {"model_path": "", "probe": attempt}, source="test")
            await asyncio.sleep(0.5)
            if await seen("MODEL_DISTRIBUTION_FAILED", started):
                break
        promoted = time.time()
        await facade.router.publish("MODEL_PROMOTED", {"model_path": "models/canonical_hex8_2p.pth",
                                                       "config_key": "hex8_2p"}, source="promotion")
        await eventually(lambda: all(digest(cluster.data(n) / "models/canonical_hex8_2p.pth") == sha
                                     for n in ("B", "C")), 30, "the model on B and C")
        done: list[dict[str, object]] = []
        for _ in range(100):
            done = await seen("MODEL_DISTRIBUTION_COMPLETE", promoted)
            if done:
                break
            await asyncio.sleep(0.2)
        assert done and done[0]["models_distributed"] == 3 and done[0]["bytes_transferred"] == 2_000_000
        assert done[0]["model_path"] == "models/canonical_hex8_2p.pth"


async def test_a_target_that_is_down_is_an_error_for_that_node_not_a_hang(
        cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.data("A"), "games/hex8_4p_down.db", 100_000)
    never = await asyncio.wait_for(facade.sync("games", targets=["B", "ghost"], num_players=4,
                                               require_confirmation=True, timeout_seconds=4), 30)
    assert not never.success and never.nodes_synced == 1 and never.bytes_transferred == 100_000
    assert never.errors == ["ghost: no answer within 4 s (not a known sync peer)"]

    c = cluster.agents["C"].process
    c.send_signal(signal.SIGTERM)
    assert c.wait(timeout=20) == 0
    down = await asyncio.wait_for(facade.sync("games", targets=["B", "C"], require_confirmation=True,
                                              timeout_seconds=30), 10)
    assert not down.success and down.nodes_synced == 1
    assert down.errors == ["C: the node is down (its sync record says stopped)"]
