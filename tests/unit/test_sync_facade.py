"""The sync facade end to end in one process: three AUTO_SYNC daemons with real data servers on
loopback, the buses on the memory broker. Confirmation with true byte counts, the backends, a silent
and a stopped target, exclude_nodes, no-wait, two requests for the same file, DISTRIBUTED, priority
sync, gossip, model and npz distribution, stats and health."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordination.config import RouterConfig
from coordination.daemons.auto_sync import AutoSyncDaemon
from coordination.daemons.model_distribution import ModelDistributionDaemon
from coordination.daemons.npz_distribution import NpzDistributionDaemon
from coordination.dlq import DeadLetterQueue
from coordination.event_router import UnifiedEventRouter
from coordination.node_heartbeat import heartbeat_topic
from coordination.sync_facade import SyncBackend, SyncFacade, SyncRequest, SyncRequestError
from coordination.sync_server import DataServer
from coordination.sync_settings import SyncSettings
from tests.support import unique, until

SECRET = "unit-test-secret"


@dataclass
class Node:
    name: str
    data: Path
    server: DataServer
    daemon: AutoSyncDaemon
    task: asyncio.Task[None]


class Cluster:
    def __init__(self, root: Path, gossip_interval_s: float) -> None:
        self.root = root
        self.namespace = unique("sync")
        self.cross = f"memory://{unique('cross')}"
        self.gossip_interval_s = gossip_interval_s
        self.nodes: dict[str, Node] = {}

    def config(self, node_id: str) -> RouterConfig:
        return RouterConfig(redis_url=f"memory://{unique(node_id)}", kafka_bootstrap=self.cross,
                            namespace=self.namespace, node_id=node_id, publish_retry_budget_s=2.0,
                            handler_timeout_s=5.0, max_attempts=1)

    def settings(self, data: Path, **overrides: object) -> SyncSettings:
        values: dict[str, object] = {"data_dir": data, "secret": SECRET, "auto_sync_interval_s": self.gossip_interval_s,
                                     "min_sync_interval_s": 0.0, "scan_interval_s": 0.05, "max_concurrent": 2}
        values.update(overrides)
        return SyncSettings(**values)  # type: ignore[arg-type]

    async def add(self, name: str) -> Node:
        data = self.root / name
        server = DataServer(data, SECRET, name)
        await server.start()

        async def locate() -> DataServer:
            return server

        daemon = AutoSyncDaemon(self.config(name), self.settings(data), data_server=locate)
        node = Node(name, data, server, daemon, asyncio.create_task(daemon.run()))
        self.nodes[name] = node
        return node

    async def stop(self, name: str) -> None:
        node = self.nodes[name]
        await node.daemon.stop()
        await asyncio.wait_for(node.task, 10)
        await node.server.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path, gossip_interval_s=3600.0)
    yield made
    for name, node in made.nodes.items():
        if not node.task.done():
            await made.stop(name)


@pytest.fixture
async def facade(cluster: Cluster) -> AsyncIterator[SyncFacade]:
    for name in ("a", "b", "c"):
        await cluster.add(name)
    router = UnifiedEventRouter(cluster.config("requester"))
    made = SyncFacade(router, cluster.settings(cluster.root / "requester"), poll_interval_s=0.05, resend_after_s=0.3)
    peers: dict[str, object] = {}

    async def refresh() -> None:
        peers.update(await made.peers())

    for _ in range(200):
        await refresh()
        if {"a", "b", "c"} <= set(peers):
            break
        await asyncio.sleep(0.05)
    assert {"a", "b", "c"} <= set(peers)
    yield made
    await made.close()
    await router.stop()


def write(node: Node, relative: str, size: int, seed: int = 0) -> str:
    path = node.data / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(f"{relative}{seed}".encode()).digest() * 2048
    path.write_bytes((block * (size // len(block) + 1))[:size])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


async def test_games_reach_the_named_targets_with_confirmation_and_true_byte_counts(cluster: Cluster,
                                                                                   facade: SyncFacade) -> None:
    a = cluster.nodes["a"]
    sha = write(a, "games/hex8_2p_a.db", 300_000)
    seen: list[tuple[str, str]] = []
    response = await facade.sync(SyncRequest(data_type="games", targets=["b", "c"], require_confirmation=True,
                                             timeout_seconds=20),
                                 on_update=lambda p: seen.append((p.node_id, p.status)))
    assert response.success, response.errors
    assert response.backend_used is SyncBackend.ROUTER
    assert response.nodes_synced == 2 and response.bytes_transferred == 2 * 300_000
    assert response.errors == []
    nodes = response.details["nodes"]
    assert {n: (nodes[n]["status"], nodes[n]["files"], nodes[n]["bytes_transferred"]) for n in nodes} == \
        {"b": ("completed", 1, 300_000), "c": ("completed", 1, 300_000)}
    assert nodes["b"]["planned_bytes"] == 300_000
    for name in ("b", "c"):
        assert digest(cluster.nodes[name].data / "games/hex8_2p_a.db") == sha
        assert (name, "completed") in seen


async def test_filters_and_the_backend_order(cluster: Cluster, facade: SyncFacade) -> None:
    a = cluster.nodes["a"]
    write(a, "games/hex8_2p_x.db", 10_000)
    write(a, "games/hex8_3p_x.db", 10_000)
    write(a, "games/square8_2p_x.db", 10_000)
    write(a, "models/hex8_2p.pth", 10_000)
    response = await facade.sync("games", targets=["b"], board_type="hex8", num_players=2, priority="high",
                                 require_confirmation=True, timeout_seconds=20)
    assert response.success and response.backend_used is SyncBackend.CLUSTER_SYNC
    b = cluster.nodes["b"].data
    assert sorted(p.name for p in (b / "games").iterdir() if not p.name.startswith(".")) == ["hex8_2p_x.db"]
    assert not (b / "models/hex8_2p.pth").exists()


async def test_a_silent_target_is_an_error_for_that_node_not_a_hang(cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.nodes["a"], "games/hex8_2p_s.db", 5_000)
    response = await asyncio.wait_for(facade.sync("games", targets=["b", "ghost"], require_confirmation=True,
                                                  timeout_seconds=1.5), 10)
    assert not response.success
    assert response.nodes_synced == 1 and response.bytes_transferred == 5_000
    assert response.errors == ["ghost: no answer within 1.5 s (not a known sync peer)"]
    assert response.details["nodes"]["ghost"]["status"] == "timeout"


async def test_a_stopped_target_is_reported_down_at_once(cluster: Cluster, facade: SyncFacade) -> None:
    await cluster.stop("c")
    response = await asyncio.wait_for(facade.sync("games", targets=["c"], require_confirmation=True,
                                                  timeout_seconds=30), 10)
    assert not response.success
    assert response.errors == ["c: the node is down (its sync record says stopped)"]
    assert response.details["nodes"]["c"]["status"] == "down"


async def test_exclude_nodes_are_neither_targets_nor_sources(cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.nodes["a"], "npz/hex8_2p_e.npz", 20_000)
    write(cluster.nodes["c"], "npz/hex8_2p_only_c.npz", 20_000)
    response = await facade.sync("npz", exclude_nodes=["c"], require_confirmation=True, timeout_seconds=20)
    assert response.success, response.errors
    assert response.backend_used is SyncBackend.AUTO_SYNC
    assert response.details["targets"] == ["a", "b"]
    b = cluster.nodes["b"].data
    assert (b / "npz/hex8_2p_e.npz").exists() and not (b / "npz/hex8_2p_only_c.npz").exists()
    assert not (cluster.nodes["c"].data / "npz/hex8_2p_e.npz").exists()
    assert response.bytes_transferred == 20_000  # b pulled one file; a held it already


async def test_without_confirmation_it_returns_once_the_command_is_sent(cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.nodes["a"], "games/hex8_2p_nw.db", 5_000)
    response = await facade.sync("games", targets=["b"])
    assert response.success and response.nodes_synced == 0
    assert response.details["nodes"]["b"]["status"] == "requested" and response.details["confirmed"] is False
    await until(lambda: (cluster.nodes["b"].data / "games/hex8_2p_nw.db").exists(), 10, "the file on b")


async def test_two_requests_for_the_same_file_at_once_transfer_it_once(cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.nodes["a"], "games/hex8_2p_big.db", 4_000_000)
    request = {"data_type": "games", "targets": ["b"], "require_confirmation": True, "timeout_seconds": 30,
               "bandwidth_limit_mbps": 100}
    first, second = await asyncio.gather(facade.sync(dict(request)), facade.sync(dict(request)))
    assert first.success and second.success, (first.errors, second.errors)
    assert first.bytes_transferred + second.bytes_transferred == 4_000_000
    shared = [r.details["nodes"]["b"]["shared_files"] for r in (first, second)]
    files = [r.details["nodes"]["b"]["files"] for r in (first, second)]
    assert sorted(files) == [0, 1] and sorted(shared) == [0, 1]
    assert digest(cluster.nodes["b"].data / "games/hex8_2p_big.db") == sha


async def test_distributed_pulls_into_this_process_and_priority_sync_names_its_source(
        cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.nodes["a"], "games/hex8_2p_d.db", 7_000)
    write(cluster.nodes["b"], "games/hex8_2p_from_b.db", 3_000)
    write(cluster.nodes["b"], "games/hex8_4p_from_b.db", 3_000)
    here = await facade.sync("games", backend=SyncBackend.DISTRIBUTED)
    assert here.success and here.backend_used is SyncBackend.DISTRIBUTED
    assert here.bytes_transferred == 13_000 and (cluster.root / "requester/games/hex8_2p_d.db").exists()

    response = await facade.trigger_priority_sync("orphan_games_recovery", source_node="b", config_key="hex8_2p",
                                                  targets=["c"], timeout_seconds=20)
    assert response.success and response.backend_used is SyncBackend.CLUSTER_SYNC
    c = cluster.nodes["c"].data
    assert (c / "games/hex8_2p_from_b.db").exists()
    assert not (c / "games/hex8_2p_d.db").exists() and not (c / "games/hex8_4p_from_b.db").exists()
    with pytest.raises(SyncRequestError, match="config_key 'hex8'"):
        await facade.trigger_priority_sync(source_node="b", config_key="hex8")

    unknown = await facade.trigger_priority_sync(source_node="nobody", targets=["c"], timeout_seconds=20)
    assert not unknown.success and "nobody: no live sync record" in unknown.errors[0]


async def test_stats_and_health_follow_the_syncs(cluster: Cluster, facade: SyncFacade) -> None:
    write(cluster.nodes["a"], "games/hex8_2p_h.db", 1_000)
    await facade.sync("games", targets=["b"], require_confirmation=True, timeout_seconds=20)
    await facade.sync("games", targets=["ghost"], require_confirmation=True, timeout_seconds=0.5)
    stats = facade.get_stats()
    assert stats["total_syncs"] == 2 and stats["total_errors"] == 1 and stats["total_bytes"] == 1_000
    assert stats["by_backend"] == {"router": 2} and stats["backends_loaded"] == 5
    health = facade.health_check()  # one failure in two: 50 %, between the 30 % and 60 % marks
    assert health.healthy and health.status == "degraded"
    assert health.details["backends"]["router"] == {"syncs": 2, "errors": 1, "error_rate": 0.5, "status": "degraded"}


async def test_model_distribution_after_a_promotion(cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.nodes["a"], "models/canonical_hex8_2p.pth", 50_000)
    distributor = ModelDistributionDaemon(cluster.config("a"), cluster.settings(cluster.nodes["a"].data))
    task = asyncio.create_task(distributor.run())
    try:
        await until(lambda: distributor.router.is_running, 5, "the distributor's router")
        await facade.router.publish("MODEL_PROMOTED", {"model_path": "/srv/ringrift/models/canonical_hex8_2p.pth",
                                                       "config_key": "hex8_2p"}, source="promotion")
        for name in ("b", "c"):
            await until(lambda n=name: digest(cluster.nodes[n].data / "models/canonical_hex8_2p.pth") == sha, 15,
                        f"the model on {name}")
        reader = await facade.reader()
        topic = facade.router.config.cross_topic

        async def completes() -> list[dict[str, object]]:
            return [r.event.payload async for r in reader.read(topic)
                    if r.event is not None and r.event.event_type == "MODEL_DISTRIBUTION_COMPLETE"]

        for _ in range(200):
            done = await completes()
            if done:
                break
            await asyncio.sleep(0.05)
        assert done and done[0]["models_distributed"] == 3 and done[0]["bytes_transferred"] == 100_000
    finally:
        await distributor.stop()
        await asyncio.wait_for(task, 10)


async def test_npz_distribution_sends_an_export_to_the_training_nodes(cluster: Cluster, facade: SyncFacade) -> None:
    sha = write(cluster.nodes["a"], "npz/hex8_2p_export.npz", 30_000)
    reader = await facade.reader()
    topic = heartbeat_topic(facade.router.config)
    for node, profile in (("b", "training_node"), ("c", "selfplay")):
        beat = {"node_id": node, "profile": profile, "state": "running", "sent_at": time.time(), "interval_s": 60}
        await reader.publish_raw(topic, json.dumps(beat).encode(), key=node)
    distributor = NpzDistributionDaemon(cluster.config("a"), cluster.settings(cluster.nodes["a"].data))
    task = asyncio.create_task(distributor.run())
    try:
        await until(lambda: distributor.router.is_running, 5, "the distributor's router")
        await facade.router.publish("NPZ_EXPORT_COMPLETE", {"output_path": "/exports/npz/hex8_2p_export.npz",
                                                            "success": True, "config_key": "hex8_2p"}, source="export")
        await until(lambda: digest(cluster.nodes["b"].data / "npz/hex8_2p_export.npz") == sha, 15, "the npz on b")
        await until(lambda: distributor.health_check().details["handled"] == 1, 5, "the handling's end")
        assert not (cluster.nodes["c"].data / "npz/hex8_2p_export.npz").exists()
    finally:
        await distributor.stop()
        await asyncio.wait_for(task, 10)


async def test_a_malformed_command_becomes_a_dead_letter(cluster: Cluster, facade: SyncFacade) -> None:
    await facade.router.publish("SYNC_REQUEST", {"request_id": "bad", "targets": "b", "data_types": ["games"],
                                                 "deadline": time.time() + 60}, source="test")
    letters = DeadLetterQueue(await facade.reader(), facade.router.config.dlq_topic)
    found: list[object] = []
    for _ in range(100):
        found = [x for x in await letters.list() if x.exception_type == "CommandError"]
        if found:
            break
        await asyncio.sleep(0.05)
    assert found and "malformed SYNC_REQUEST" in found[0].message  # type: ignore[attr-defined]


async def test_gossip_pulls_a_new_file_without_any_request(tmp_path: Path) -> None:
    made = Cluster(tmp_path, gossip_interval_s=0.2)
    try:
        a, b = await made.add("a"), await made.add("b")
        sha = write(a, "games/hex8_2p_gossip.db", 40_000)
        await until(lambda: digest(b.data / "games/hex8_2p_gossip.db") == sha, 15, "the gossip pull")
        await until(lambda: b.daemon.counts["files_pulled"] == 1, 5, "the gossip cycle's count")
    finally:
        for name in list(made.nodes):
            await made.stop(name)


async def test_section_6_sync_examples_run_as_written(cluster: Cluster, facade: SyncFacade,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """API reference section 6, "Priority Sync with Feedback" and "Health Monitoring Dashboard", with the
    import prefix dropped; the process's facade and router are the test cluster's."""
    import coordination.event_router as event_router_module
    import coordination.sync_facade as sync_facade_module
    from coordination.daemon_manager import DaemonManager

    monkeypatch.setattr(sync_facade_module, "_facade", facade)
    monkeypatch.setattr(event_router_module, "_router", facade.router, raising=False)
    write(cluster.nodes["b"], "games/hex8_2p_b.db", 50_000)
    published: list[tuple[str, dict[str, object]]] = []

    from coordination.event_router import get_router
    from coordination.sync_facade import SyncRequest, get_sync_facade
    original_publish = get_router().publish

    async def recording_publish(event_type: str, payload: dict[str, object] | None = None, source: str = "",
                                **options: object) -> object:
        published.append((event_type, dict(payload or {})))
        return await original_publish(event_type, payload, source, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(get_router(), "publish", recording_publish)

    async def sync_with_feedback(config_key: str, source_node: str):  # type: ignore[no-untyped-def]
        facade = get_sync_facade()
        router = get_router()

        # Trigger sync
        response = await facade.sync(SyncRequest(
            data_type="games",
            targets=[source_node],
            priority="high",
            require_confirmation=True,
        ))

        if response.success:
            # Emit success event for downstream handlers
            await router.publish(
                "PRIORITY_SYNC_COMPLETED",
                payload={
                    "config_key": config_key,
                    "source_node": source_node,
                    "games_synced": response.nodes_synced,
                },
                source="sync_orchestrator"
            )
        else:
            await router.publish(
                "PRIORITY_SYNC_FAILED",
                payload={
                    "config_key": config_key,
                    "errors": response.errors,
                },
                source="sync_orchestrator"
            )

    await asyncio.wait_for(sync_with_feedback("hex8_2p", "a"), 30)
    feedback = [(t, p) for t, p in published if t.startswith("PRIORITY_SYNC")]
    assert [t for t, _ in feedback] == ["PRIORITY_SYNC_COMPLETED"], published
    assert feedback[0][1]["games_synced"] == 1

    def get_system_health():  # type: ignore[no-untyped-def]
        """Aggregate health status from all components."""
        from coordination.daemon_manager import get_daemon_manager
        manager = get_daemon_manager()
        facade = get_sync_facade()
        router = get_router()

        # Collect daemon health
        daemon_health = manager.get_all_daemon_health()
        running = sum(1 for h in daemon_health.values() if h.get("state") == "running")
        failed = sum(1 for h in daemon_health.values() if h.get("state") == "failed")

        # Check sync status
        sync_health = facade.health_check()

        # Get event routing stats
        router_stats = router.get_stats()

        return {
            "daemons": {
                "running": running,
                "failed": failed,
                "total": len(daemon_health),
            },
            "sync": {
                "healthy": sync_health.healthy,
                "total_syncs": facade.get_stats()["total_syncs"],
            },
            "events": {
                "routed": sum(router_stats["events_routed"].values()),
                "duplicates_prevented": router_stats["duplicates_prevented"],
            },
        }

    try:
        health = get_system_health()
    finally:
        DaemonManager.reset_instance()
    assert health["sync"] == {"healthy": True, "total_syncs": 1}
    assert health["daemons"] == {"running": 0, "failed": 0, "total": health["daemons"]["total"]}
