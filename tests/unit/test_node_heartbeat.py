"""Heartbeats on memory:// brokers: encoding, folding by node, lost and stopped nodes, the status report
built from them, and a node agent in-process whose heartbeats go to the memory:// cross bus."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import brokers
from coordination.cli_status import StatusSource, build_report
from coordination.config import RouterConfig
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig
from coordination.daemons.builtin import IMPLEMENTED_PROFILES, register_builtin_daemons
from coordination.event_router import RouterEvent, UnifiedEventRouter
from coordination.node_agent import NodeAgent
from coordination.node_heartbeat import (
    HeartbeatReader,
    consumers_of,
    decode_heartbeat,
    encode_heartbeat,
    heartbeat_topic,
    node_state,
)
from tests.support import unique


def beat(node_id: str, sent_at: float, state: str = "running", **fields: Any) -> dict[str, Any]:
    return {"node_id": node_id, "profile": "coordinator", "host": "h", "pid": 1, "version": "0.1.0",
            "started_at": 0.0, "sent_at": sent_at, "interval_s": 5.0, "health_url": None, "state": state,
            "daemons": {}, "is_leader": False, "leader": None, "spool_depth": {"total": 0}, **fields}


def test_a_heartbeat_survives_encoding_and_foreign_bytes_are_not_one() -> None:
    original = beat("gpu-3", 1767225600.5, daemons={"event_router": {"state": "running", "restarts": 1}})
    assert decode_heartbeat(encode_heartbeat(original)) == original
    for raw in (None, b"not json", b"[1, 2]", b'{"node_id": "", "sent_at": 1, "state": "running"}',
                b'{"node_id": "a", "sent_at": "yesterday", "state": "running"}',
                b'{"event_type": "TRAINING_COMPLETED", "payload": {}}'):
        assert decode_heartbeat(raw) is None, raw


def test_node_state_running_lost_after_three_intervals_and_stopped() -> None:
    now = 1000.0
    assert node_state(beat("a", now - 14.0), now) == "running"  # 3 intervals of 5 s not yet over
    assert node_state(beat("a", now - 16.0), now) == "lost"
    assert node_state(beat("a", now - 16.0, interval_s=10.0), now) == "running"
    assert node_state(beat("a", now - 3600.0, state="stopped"), now) == "stopped"


async def test_the_reader_keeps_the_newest_record_per_node_and_reads_only_what_is_new() -> None:
    async with brokers.connect(f"memory://{unique('hb')}") as broker:
        topic = "ns.nodes"
        await broker.ensure_topic(topic, compacted=True)
        reader = HeartbeatReader(broker, topic)
        assert await reader.refresh() == {}
        await broker.publish_raw(topic, encode_heartbeat(beat("a", 1.0)), key="a")
        await broker.publish_raw(topic, encode_heartbeat(beat("b", 2.0)), key="b")
        await broker.publish_raw(topic, b"garbage", key="x")
        await broker.publish(topic, RouterEvent.new("TRAINING_COMPLETED", {}))  # an event is not a heartbeat
        await broker.publish_raw(topic, encode_heartbeat(beat("a", 3.0, state="stopped")), key="a")
        nodes = await reader.refresh()
        assert {n: (b["sent_at"], b["state"]) for n, b in nodes.items()} == {"a": (3.0, "stopped"),
                                                                             "b": (2.0, "running")}
        await broker.publish_raw(topic, encode_heartbeat(beat("a", 4.0)), key="a")
        assert (await reader.refresh())["a"]["sent_at"] == 4.0


async def test_the_reader_of_a_namespace_without_nodes_finds_none() -> None:
    async with brokers.connect(f"memory://{unique('hb')}") as broker:
        assert await HeartbeatReader(broker, "nobody.nodes").refresh() == {}


def test_a_router_reports_the_groups_of_the_buses_it_reads() -> None:
    with_kafka = RouterConfig(redis_url="memory://r", namespace="ns", node_id="n1")
    assert consumers_of(SimpleNamespace(config=with_kafka)) == [
        ("cross", "ns.events", "n1.router"), ("data", "ns:data", "n1.router"), ("stage", "ns:stage", "n1.router")]
    without = RouterConfig(redis_url="memory://r", kafka_bootstrap=None, namespace="ns", node_id="n1")
    assert [bus for bus, _, _ in consumers_of(SimpleNamespace(config=without))] == ["data", "stage"]
    assert heartbeat_topic(with_kafka) == "ns.nodes" and heartbeat_topic(without) == "ns:nodes"


def _consumer(bus: str, group: str, behind: int | None) -> dict[str, Any]:
    return {"bus": bus, "topic": f"ns.{bus}", "group": group, "behind": behind}


def test_the_report_folds_states_lag_per_daemon_spool_and_leader() -> None:
    now = 1000.0
    beats = {
        "a": beat("a", now - 1, is_leader=True, leader="a", spool_depth={"data": 2, "total": 2}, daemons={
            "event_router": {"state": "running", "restarts": 0,
                             "consumers": [_consumer("data", "a.router", 4), _consumer("cross", "a.router", 99)]},
            "ledger": {"state": "running", "restarts": 2, "consumers": [_consumer("cross", "daemon.ledger", 1)]}}),
        "b": beat("b", now - 1, leader="a", daemons={
            "event_router": {"state": "running", "restarts": 0, "consumers": [_consumer("data", "b.router", None)]},
            "ledger": {"state": "running", "restarts": 0, "consumers": [_consumer("cross", "daemon.ledger", 1)]}}),
        "c": beat("c", now - 100, daemons={  # lost: its groups still count
            "event_router": {"state": "running", "restarts": 0, "consumers": [_consumer("stage", "c.router", 5)]}}),
        "d": beat("d", now - 1, state="stopped", spool_depth={"total": 7}, daemons={  # stopped: no lag
            "event_router": {"state": "stopped", "restarts": 0, "consumers": [_consumer("data", "d.router", 50)]}}),
    }
    cross = {("ns.cross", "a.router"): 3, ("ns.cross", "daemon.ledger"): 10}
    report = build_report("ns", beats, now=now, cross_lag=cross, dlq_depth=6, transfers={"b": 2, "x": 1})
    assert [(n["node_id"], n["state"]) for n in report["nodes"]] == [("a", "running"), ("b", "running"),
                                                                      ("c", "lost"), ("d", "stopped")]
    assert [n["active_transfers"] for n in report["nodes"]] == [0, 2, 0, 0]
    assert report["leader"] == "a" and report["dlq_depth"] == 6
    assert report["spool_depth"] == 9  # the stopped node's 7 wait on its disk
    # the cross group's lag is the broker's answer (10), counted once for the cluster, not per node
    assert report["lag_by_daemon"] == {"event_router": None, "ledger": 10}
    rows = {(r["group"], r["node_id"]): r["behind"] for r in report["lag"]}
    assert rows == {("a.router", "a"): 4, ("a.router", None): 3, ("b.router", "b"): None, ("c.router", "c"): 5,
                    ("daemon.ledger", None): 10}


def test_without_a_running_leader_the_report_names_the_leader_a_running_node_saw() -> None:
    now = 1000.0
    beats = {"a": beat("a", now - 100, is_leader=True), "b": beat("b", now - 1, leader="z")}
    assert build_report("ns", beats, now=now, cross_lag={}, dlq_depth=0)["leader"] == "z"
    assert build_report("ns", {}, now=now, cross_lag={}, dlq_depth=0)["leader"] is None


@pytest.fixture
def memory_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NodeAgent:
    monkeypatch.setenv("RINGRIFT_HEALTH_PORT", "0")
    name = unique("agent")
    config = RouterConfig(redis_url=f"memory://{name}-redis", kafka_bootstrap=f"memory://{name}-kafka",
                          namespace=unique("ns"), node_id="node-m", start_position="earliest")
    router = UnifiedEventRouter(config)
    manager = DaemonManager(DaemonManagerConfig(shutdown_timeout=2.0), router=router, profiles=IMPLEMENTED_PROFILES,
                            state_path=tmp_path / "state.json")
    register_builtin_daemons(manager, router)
    return NodeAgent("minimal", heartbeat_interval_s=0.05, router=router, manager=manager, plugins=[])


async def _report_where(source: StatusSource, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report = await source.report()
        if predicate(report):
            return report
        assert time.monotonic() < deadline, f"not seen within {timeout:g} s: {report}"
        await asyncio.sleep(0.02)


def _health_server_runs(report: dict[str, Any]) -> bool:
    return bool(report["nodes"]) and report["nodes"][0]["daemons"].get("health_server", {}).get("state") == "running"


async def test_an_agent_without_kafka_beats_on_the_memory_cross_bus_and_says_stopped_at_the_end(
        memory_agent: NodeAgent) -> None:
    config = memory_agent.router.config
    ready: list[str] = []
    running = asyncio.create_task(memory_agent.run(on_ready=ready.append))
    async with brokers.connect(config.kafka_url) as broker:  # type: ignore[arg-type]
        source = StatusSource(config, broker)
        report = await _report_where(source, _health_server_runs)
        [node] = report["nodes"]
        assert ready and ready[0].startswith("node node-m ready: profile minimal")
        assert node["state"] == "running" and node["profile"] == "minimal" and node["health_url"].startswith("http")
        assert node["daemons"]["event_router"]["state"] == "running"
        assert {c["bus"] for c in node["daemons"]["event_router"]["consumers"]} == {"data", "stage", "cross"}
        assert node["is_leader"] is True and report["leader"] == "node-m"  # alone without Kafka
        assert memory_agent.heartbeat is not None and memory_agent.heartbeat.topic == heartbeat_topic(config)
        memory_agent.request_stop()
        await asyncio.wait_for(running, 10)
        [node] = (await source.report())["nodes"]
        assert node["state"] == "stopped" and node["daemons"]["event_router"]["state"] == "stopped"
