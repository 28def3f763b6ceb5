"""Two node agents as processes (`coord node run`, own Redis each, the shared Kafka) seen through
`coord status` as an operator sees them: both nodes with their daemons and the leader; a SIGTERM'd node
shown stopped and the lead handed over; /metrics over HTTP after events flowed; `--log-format json`
lines that parse and carry the event id of the handling they were logged in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import KAFKA_BOOTSTRAP, private_redis, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
REDIS_PORTS = (6385, 6386)  # private: one Redis per node


@pytest.fixture(scope="module")
def node_redis() -> Iterator[tuple[str, str]]:
    """Two private Redis servers (scripts/services), stopped after the module."""
    with private_redis(*REDIS_PORTS) as urls:
        yield (urls[0], urls[1])


class Node:
    """`coord node run` in a child process; stdout and stderr read by threads into lists."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "coordination.cli", "node", "run", *args], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def ready_line(self, timeout: float = 60.0) -> str:
        wait_until(lambda: any(" ready: " in line for line in self.stdout) or self.process.poll() is not None,
                   timeout, "the node's ready line")
        assert self.process.poll() is None, f"the node exited: {self.stderr[-20:]}"
        return next(line for line in self.stdout if " ready: " in line)

    def health_url(self) -> str:
        return self.ready_line().rsplit("health: ", 1)[1].removesuffix("/healthz")

    def stop(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.2)


def coord(env: dict[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "coordination.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def status(env: dict[str, str]) -> dict[str, Any]:
    result = coord(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def metrics(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return response.read().decode()


def metrics_with(node: Node, text: str) -> str | None:
    exposition = metrics(node.health_url())
    return exposition if text in exposition else None


def status_where(env: dict[str, str], predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    report = status(env)
    return report if predicate(report) else None


@pytest.fixture
def cluster_env(kafka_service: str, node_redis: tuple[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_")}
    base.update(RINGRIFT_KAFKA_BOOTSTRAP=KAFKA_BOOTSTRAP, RINGRIFT_NAMESPACE=unique("status"),
                RINGRIFT_HEALTH_PORT="0", RINGRIFT_HEARTBEAT_INTERVAL="1", RINGRIFT_PLUGINS="")
    base.update(RINGRIFT_CLUSTER_SECRET="status-test", RINGRIFT_DATA_PORT="0")  # the profiles' sync daemons
    envs = {name: {**base, "RINGRIFT_REDIS_URL": url, "RINGRIFT_COORDINATION_DIR": str(tmp_path / name),
                   "RINGRIFT_DATA_DIR": str(tmp_path / name / "data")}
            for name, url in zip("AB", node_redis, strict=True)}
    nodes: list[Node] = []
    yield {"envs": envs, "nodes": nodes}
    for node in nodes:
        node.kill()


def test_two_nodes_in_status_metrics_json_logs_and_a_stopped_node(cluster_env: dict[str, Any]) -> None:
    envs, nodes = cluster_env["envs"], cluster_env["nodes"]
    a = Node(envs["A"], "--profile", "coordinator", "--node-id", "A")
    nodes.append(a)
    a.ready_line()  # A first: it is the candidate that leads
    b = Node(envs["B"], "--profile", "training_node", "--node-id", "B", "--log-format", "json", "--log-level", "info")
    nodes.append(b)
    b.ready_line()

    def both_running_with_a_leader() -> dict[str, Any] | None:
        report = status(envs["A"])
        states = {n["node_id"]: n["state"] for n in report["nodes"]}
        return report if states == {"A": "running", "B": "running"} and report["leader"] == "A" else None

    report = wait_until(both_running_with_a_leader, 60, "both nodes running and A leading in `coord status`")
    by_id = {n["node_id"]: n for n in report["nodes"]}
    assert by_id["A"]["profile"] == "coordinator" and by_id["B"]["profile"] == "training_node"
    assert {"event_router", "health_server", "daemon_watchdog", "dlq_retry"} <= set(by_id["A"]["daemons"])
    assert {"event_router", "health_server", "daemon_watchdog"} <= set(by_id["B"]["daemons"])
    assert "dlq_retry" not in by_id["B"]["daemons"]
    for node in by_id.values():  # the infrastructure daemons (profiles gain domain daemons over time)
        assert all(node["daemons"][d]["state"] == "running" for d in ("event_router", "health_server",
                                                                       "daemon_watchdog")), node["daemons"]
    assert by_id["A"]["is_leader"] is True and by_id["B"]["is_leader"] is False
    assert by_id["A"]["health_url"] == a.health_url() and by_id["B"]["pid"] == b.process.pid
    # the coordinator node runs the coordinators (bootstrap), the training node does not
    with urllib.request.urlopen(f"{a.health_url()}/status", timeout=10) as response:
        coordination = json.loads(response.read())["coordination"]
    assert coordination["ready"] is True and coordination["initialized_count"] == coordination["total_count"] > 20
    with urllib.request.urlopen(f"{b.health_url()}/status", timeout=10) as response:
        assert "coordination" not in json.loads(response.read())
    assert "event_router" in report["lag_by_daemon"]
    assert {(r["group"], r["bus"]) for r in report["lag"]} >= {("A.router", "cross"), ("B.router", "data")}

    published = coord(envs["A"], "publish", "TRAINING_COMPLETED", "--payload", '{"config_key": "hex8_2p"}')
    assert published.returncode == 0, published.stderr
    consumed = 'ringrift_events_consumed_total{event_type="TRAINING_COMPLETED",group="A.router"} 1.0'
    text = wait_until(lambda: metrics_with(a, consumed), 30, "A's router counting the published event")
    for family in ("ringrift_events_published_total", "ringrift_events_consumed_total",
                   "ringrift_events_consumed_by_bus_total", "ringrift_events_deduplicated_total",
                   "ringrift_events_dead_lettered_total", "ringrift_handler_duration_seconds_bucket",
                   "ringrift_spool_depth", "ringrift_daemon_state", "ringrift_daemon_restarts",
                   "ringrift_consumer_lag", "ringrift_is_leader 1.0"):
        assert family in text, family
    assert 'ringrift_handler_duration_seconds_count{event_type="LEADER_ELECTED"' in text  # the leader tracker ran

    assert a.stop() == 0
    report = wait_until(lambda: status_where(envs["B"], lambda r: r["leader"] == "B"), 60,
                        "B leading after A stopped")
    by_id = {n["node_id"]: n for n in report["nodes"]}
    assert by_id["A"]["state"] == "stopped" and by_id["B"]["state"] == "running"
    assert all(d["state"] == "stopped" for d in by_id["A"]["daemons"].values())
    assert not [r for r in report["lag"] if r["group"].startswith("A.")]  # a stopped node's groups are left out
    assert "ringrift_is_leader 1.0" in metrics(b.health_url())

    def leader_logged() -> list[dict[str, Any]]:
        logged = [json.loads(line) for line in b.stderr]  # every line is JSON
        return [line for line in logged if line["message"] == "leader of the namespace: B"]

    [line] = wait_until(leader_logged, 30, "B's log of its own election")
    assert line["node_id"] == "B" and line["event_type"] == "LEADER_ELECTED" and line["event_id"]
    assert line["trace_id"] and line["level"] == "INFO" and line["logger"] == "coordination.node_agent"
    assert b.stop() == 0
    assert all(json.loads(line) for line in b.stderr)
    assert {n["node_id"]: n["state"] for n in status(envs["A"])["nodes"]} == {"A": "stopped", "B": "stopped"}


def test_status_watch_redraws_until_ctrl_c_and_exits_0(cluster_env: dict[str, Any]) -> None:
    envs, nodes = cluster_env["envs"], cluster_env["nodes"]
    a = Node(envs["A"], "--profile", "minimal", "--node-id", "A")
    nodes.append(a)
    a.ready_line()
    watch = subprocess.Popen([PYTHON, "-m", "coordination.cli", "status", "--watch", "--json", "--interval", "0.5"],
                             cwd=ROOT, env=envs["A"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        reports = [json.loads(watch.stdout.readline()) for _ in range(3)]
        assert all(r["namespace"] == envs["A"]["RINGRIFT_NAMESPACE"] for r in reports)
        assert reports[0]["generated_at"] < reports[2]["generated_at"]
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=15) == 0
        assert "Traceback" not in (watch.stderr.read() if watch.stderr else "")
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert a.stop() == 0


def test_status_with_kafka_unreachable_is_one_line(cluster_env: dict[str, Any]) -> None:
    env = {**cluster_env["envs"]["A"], "RINGRIFT_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    for args in (("status",), ("status", "--watch")):
        result = coord(env, "--timeout", "2", *args)
        assert result.returncode == 3 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("coord: error: BrokerUnavailable")


def test_a_bad_log_format_is_one_line(cluster_env: dict[str, Any]) -> None:
    env = {**cluster_env["envs"]["A"], "RINGRIFT_LOG_FORMAT": "xml"}
    result = coord(env, "node", "run", "--profile", "minimal")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("coord: error: ") and "--log-format" in line and "xml" in line
