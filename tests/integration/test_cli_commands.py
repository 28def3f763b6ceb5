"""`coord` run as a user runs it (a subprocess of .venv/bin/coord) against the real Redis and Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

COORD = str(Path(sys.executable).with_name("coord"))


@pytest.fixture
def env(kafka_service: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
            "RINGRIFT_NAMESPACE": unique("cli"), "RINGRIFT_COORDINATION_DIR": str(tmp_path / "state")}


def coord(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COORD, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("coord: error: ")
    for word in words:
        assert word in lines[0]


def test_version() -> None:
    result = subprocess.run([COORD, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("coord ")


def test_publish_then_tail_shows_it(env: dict[str, str]) -> None:
    published = coord(env, "publish", "TRAINING_COMPLETED", "--payload", '{"config_key": "hex8_2p"}', "--json")
    assert published.returncode == 0, published.stderr
    body = json.loads(published.stdout)
    assert body["buses"] == ["data", "stage", "cross"]
    assert len(body["content_hash"]) == 64

    for bus in ("cross", "data"):
        tail = coord(env, "tail", "--bus", bus, "--since", "5m", "--json")
        assert tail.returncode == 0, tail.stderr
        events = [json.loads(line)["event"] for line in tail.stdout.splitlines()]
        assert [e["event_id"] for e in events] == [body["event_id"]]
        assert events[0]["payload"] == {"config_key": "hex8_2p"}

    human = coord(env, "tail", "--since", "5m", "--type", "training_completed")
    assert body["event_id"] in human.stdout and "TRAINING_COMPLETED" in human.stdout


def test_publish_from_stdin_and_batch(env: dict[str, str]) -> None:
    single = coord(env, "publish", "MODEL_PROMOTED", "-", "--bus", "cross", stdin='{"model_path": "m.pth"}')
    assert single.returncode == 0, single.stderr
    assert "acknowledged on: cross" in single.stdout
    lines = "\n".join(json.dumps({"event_type": "NEW_GAMES_AVAILABLE", "payload": {"n": i}}) for i in range(3))
    batch = coord(env, "publish", "--batch", "--bus", "data", "--json", stdin=lines)
    assert batch.returncode == 0, batch.stderr
    assert [r["buses"] for r in json.loads(batch.stdout)] == [["data"]] * 3
    tail = coord(env, "tail", "--bus", "data", "--since", "5m", "--type", "NEW_GAMES_AVAILABLE", "--json")
    assert [json.loads(line)["event"]["payload"]["n"] for line in tail.stdout.splitlines()] == [0, 1, 2]


def test_tail_follow_prints_new_events_without_a_group(env: dict[str, str]) -> None:
    follower = subprocess.Popen([COORD, "tail", "--bus", "cross", "--follow", "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        published = coord(env, "publish", "TRAINING_STARTED", "--payload", '{"config_key": "sq8"}', "--json")
        event_id = json.loads(published.stdout)["event_id"]
        assert follower.stdout is not None
        line = follower.stdout.readline()  # the test's timeout bounds this
        assert json.loads(line)["event"]["event_id"] == event_id
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=15)


def test_bad_input_is_one_line_and_non_zero(env: dict[str, str]) -> None:
    assert_one_line_error(coord(env, "publish", "TRAINING_COMPLETED", "--payload", '{"config_key":'), "not valid JSON")
    assert_one_line_error(coord(env, "publish", "TRAINING_COMPLETED", "--payload", "[1]"), "JSON object")
    assert_one_line_error(coord(env, "publish", "--batch", stdin='{"event_type": "X"}\nnot json\n'), "line 2")
    assert_one_line_error(coord(env, "publish", "--strict", "TRAINING_COMPLETD"), "unknown event type")
    strict_env = {**env, "RINGRIFT_EVENT_VALIDATION_STRICT": "true"}
    assert_one_line_error(coord(strict_env, "publish", "NOT_A_TYPE"), "unknown event type")
    assert_one_line_error(coord(env, "tail", "--since", "yesterday"), "bad time")
    assert_one_line_error(coord(env, "dlq", "list", "--since", "10 parsecs"), "bad time")
    assert_one_line_error(coord(env, "dlq", "show", "no-such-id"), "no dead letter")
    assert_one_line_error(coord(env, "no-such-command"))


def test_unreachable_broker_is_one_line_after_the_budget(env: dict[str, str]) -> None:
    down = {**env, "RINGRIFT_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    started = time.monotonic()
    result = coord(down, "--timeout", "2", "publish", "TRAINING_COMPLETED")
    assert_one_line_error(result, "BrokerUnavailable")
    assert result.returncode == 3 and time.monotonic() - started < 20
    assert_one_line_error(coord({**down, "RINGRIFT_PUBLISH_RETRY_BUDGET": "2"}, "status"), "BrokerUnavailable")
    assert_one_line_error(coord(down, "--timeout", "2", "node", "run", "--profile", "minimal"), "cannot start")


async def _make_dead_letter(namespace: str) -> RouterEvent:
    config = RouterConfig.from_env(redis_url=REDIS_URL, kafka_bootstrap=KAFKA_BOOTSTRAP, namespace=namespace,
                                   node_id="cli-test", service_name="poisoned", max_attempts=2,
                                   retry_initial_s=0.01, retry_max_s=0.02, start_position="earliest",
                                   read_buses=frozenset({"cross"}))
    router = UnifiedEventRouter(config)

    def fail(event: RouterEvent) -> None:
        raise ValueError(f"bad checkpoint 42 in {event.event_id}")

    router.subscribe("MODEL_PROMOTED", fail)
    await router.start()
    try:
        event = await router.publish("MODEL_PROMOTED", {"model_path": "m.pth"}, source="test",
                                     route_to_data_bus=False, route_to_stage_bus=False)
        deadline = time.monotonic() + 30
        while router.get_stats()["dead_lettered"] < 1:
            assert time.monotonic() < deadline, router.get_stats()
            await asyncio.sleep(0.1)
        return event
    finally:
        await router.stop()


def test_dlq_list_show_stats_on_a_real_dead_letter(env: dict[str, str]) -> None:
    event = asyncio.run(_make_dead_letter(env["RINGRIFT_NAMESPACE"]))

    listed = coord(env, "dlq", "list", "--type", "MODEL_PROMOTED", "--stage", "handle", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = json.loads(listed.stdout)
    assert letter["group"] == "cli-test.poisoned" and letter["attempts"] == 2
    assert letter["error"] == "ValueError: bad checkpoint <n> in <uuid>"
    assert json.loads(coord(env, "dlq", "list", "--group", "other", "--json").stdout) == []
    assert letter["dead_letter_id"] in coord(env, "dlq", "list", "--since", "10m").stdout

    shown = coord(env, "dlq", "show", letter["dead_letter_id"][:8])
    assert shown.returncode == 0, shown.stderr
    for text in (event.event_id, "Traceback", "ValueError: bad checkpoint 42", "cross bus", "m.pth"):
        assert text in shown.stdout
    record = json.loads(coord(env, "dlq", "show", letter["dead_letter_id"], "--json").stdout)
    assert record["event"]["event_id"] == event.event_id and record["consumer_group"] == "cli-test.poisoned"

    stats = json.loads(coord(env, "dlq", "stats", "--json").stdout)
    assert stats["total"] == 1 and stats["by_type"] == {"MODEL_PROMOTED": 1}
    assert stats["by_fingerprint"] == {"ValueError: bad checkpoint <n> in <uuid>": 1}
    assert json.loads(coord(env, "status", "--json").stdout)["dlq_depth"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_node_agent_serves_health_heartbeats_and_stops_on_sigterm(env: dict[str, str]) -> None:
    port = _free_port()
    agent = subprocess.Popen([COORD, "node", "run", "--profile", "minimal", "--node-id", "node-a",
                              "--health-port", str(port), "--heartbeat-interval", "1"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        ready = agent.stdout.readline()
        assert "node node-a ready: profile minimal" in ready and f":{port}/healthz" in ready, ready
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["node_id"] == "node-a"
        status = json.loads(coord(env, "status", "--json").stdout)
        [node] = status["nodes"]
        assert node["node_id"] == "node-a" and node["state"] == "running"
        assert node["daemons"]["event_router"]["state"] == "running"
        agent.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert agent.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert "Traceback" not in (agent.stderr.read() if agent.stderr else "")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    [node] = json.loads(coord(env, "status", "--json").stdout)["nodes"]
    assert node["state"] == "stopped"


def test_daemons_list(env: dict[str, str]) -> None:
    rows = json.loads(coord(env, "daemons", "list", "--json").stdout)
    implemented = {r["daemon"] for r in rows if r["implemented"]}
    assert implemented == {"EVENT_ROUTER", "HEALTH_SERVER", "DAEMON_WATCHDOG", "DLQ_RETRY", "DATA_SERVER", "AUTO_SYNC",
                           "EPHEMERAL_SYNC", "MODEL_DISTRIBUTION", "NPZ_DISTRIBUTION"}
    coordinator = json.loads(coord(env, "daemons", "list", "--profile", "coordinator", "--json").stdout)
    router = next(r for r in coordinator if r["daemon"] == "DLQ_RETRY")
    assert router["depends_on"] == ["EVENT_ROUTER"] and "coordinator" in router["profiles"]
    assert_one_line_error(coord(env, "daemons", "list", "--profile", "nope"), "unknown profile")
