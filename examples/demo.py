"""The main job (`scripts/demo`): a two-node cluster doing real work, narrated step by step.

Node A (profile coordinator, Redis A) and node B (profile training_node, Redis B) share one Kafka.
Both run the example plugin examples/game_ledger.py. Events come from Python, from `coord publish`,
from redis-cli and from Kafka's console producer; the ledger shows each arriving once; a poison event
lands in the dead-letter queue, is fixed and re-driven; `coord status` shows the cluster; the nodes stop
cleanly; the last minutes are replayed to the ledger's group. Exit status 0 only if every step did
what it said.

    scripts/demo                     # services, venv and second Redis are set up by the script
    python -m examples.demo --redis-b redis://127.0.0.1:6380/0     # with RINGRIFT_* pointing at services
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from coordination.config import RouterConfig
from coordination.event_router import UnifiedEventRouter
from examples.demo_cluster import ROOT, DemoFailure, Ledger, Node, base_env, coord, coord_json, run, wait_for

LEDGER, NODE_LEDGER = "GAME_LEDGER", "NODE_GAME_LEDGER"
GROUP = "daemon.game_ledger"


def say(text: str) -> None:
    print(text, flush=True)


def step(number: int, title: str, why: str) -> None:
    say(f"\n== {number}. {title}\n   {why}")


def show(output: str, indent: str = "   | ") -> None:
    for line in output.rstrip().splitlines():
        say(indent + line)


class Demo:
    def __init__(self, redis_a: str, redis_b: str, kafka: str, work: Path) -> None:
        self.namespace = f"demo{uuid.uuid4().hex[:8]}"
        self.work = work
        self.kafka = kafka
        self.env = base_env(self.namespace, work)
        self.env["RINGRIFT_KAFKA_BOOTSTRAP"] = kafka
        self.ledger = Ledger(work / "ledger")
        self.redis_a, self.redis_b = redis_a, redis_b
        self.a = self._node("node-a", "coordinator", redis_a)
        self.b = self._node("node-b", "training_node", redis_b)
        self.env["RINGRIFT_REDIS_URL"] = redis_a  # the demo's own clients talk to node A's Redis
        self.expected: dict[str, set[str]] = {}  # event id -> daemons that must handle it once
        self.started_at = datetime.now(UTC)
        self.before_poison = self.started_at

    def _node(self, node_id: str, profile: str, redis_url: str) -> Node:
        env = dict(self.env, RINGRIFT_REDIS_URL=redis_url, RINGRIFT_SPOOL_DIR=str(self.work / node_id / "spool"),
                   RINGRIFT_DATA_DIR=str(self.work / node_id / "data"), RINGRIFT_DATA_PORT="0",
                   RINGRIFT_COORDINATION_DIR=str(self.work / node_id / "state"))
        return Node(node_id, profile, env, self.work / f"{node_id}.log")

    # -- the steps ----------------------------------------------------------------------------------

    def start_nodes(self) -> None:
        step(1, "Two nodes start", "Each node agent runs its profile's daemons plus the example plugin's two "
             "ledger daemons (custom daemon types registered from examples/game_ledger.py).")
        for node in (self.a, self.b):
            show(node.start())

    async def publish_from_python(self) -> None:
        step(2, "Python publishes", "router.publish() writes one event id to every bus: node A's Redis (data bus) "
             "and Kafka (cross bus). GAME_LEDGER reads Kafka in one cluster-wide group, NODE_GAME_LEDGER reads "
             "node A's Redis: each must handle it exactly once.")
        config = RouterConfig.from_env(self.env, node_id="demo-client", spool_dir=None)
        router = UnifiedEventRouter(config)
        try:
            for games in (64, 128):
                event = await router.publish("SELFPLAY_COMPLETE", {"config_key": "hex8_2p", "games": games},
                                             source="demo.python")
                self.expected[event.event_id] = {LEDGER, NODE_LEDGER}
                say(f"   published SELFPLAY_COMPLETE {event.event_id} ({games} games)")
        finally:
            await router.stop()

    def publish_from_coord(self) -> None:
        step(3, "`coord publish` publishes", "The operator's CLI, on the cross bus only: GAME_LEDGER handles it.")
        payload = json.dumps({"config_key": "square8_4p", "games": 32})
        done = coord("publish", "SELFPLAY_COMPLETE", "--payload", payload, "--bus", "cross", env=self.env)
        show(done.stdout)
        event_id = done.stdout.split("event_id=", 1)[1].split()[0]
        self.expected[event_id] = {LEDGER}

    def publish_from_other_languages(self) -> None:
        step(4, "Other languages publish", "redis-cli appends a bare JSON record to node A's data stream and "
             "Kafka's Java console producer writes one to the cross topic: only event_type and payload are "
             "required; the readers fill in the rest.")
        redis_id = f"redis-cli-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"event_type": "SELFPLAY_COMPLETE", "event_id": redis_id,
                             "payload": {"config_key": "square19_2p", "games": 8}})
        topics = RouterConfig.from_env(self.env)
        host, port = self.redis_a.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        done = run(["redis-cli", "-h", host, "-p", port, "XADD", topics.data_topic, "*", "event", record], self.env)
        say(f"   redis-cli XADD {topics.data_topic} * event '{record}' -> {done.stdout.strip()}")
        self.expected[redis_id] = {NODE_LEDGER}
        kafka_id = f"java-{uuid.uuid4().hex[:8]}"
        record = json.dumps({"event_type": "SELFPLAY_COMPLETE", "event_id": kafka_id,
                             "payload": {"config_key": "hex8_3p", "games": 16}})
        run([str(ROOT / "scripts/services"), "kafka-class", "org.apache.kafka.tools.ConsoleProducer",
             "--bootstrap-server", self.kafka, "--topic", topics.cross_topic], self.env, stdin=record + "\n",
            timeout_s=90)
        say(f"   kafka ConsoleProducer --topic {topics.cross_topic} <<< '{record}'")
        self.expected[kafka_id] = {LEDGER}

    def check_once_each(self) -> None:
        step(5, "Each event arrived once", "The ledger files the daemons wrote, read back.")
        wanted = {(daemon, event_id) for event_id, daemons in self.expected.items() for daemon in daemons}
        wait_for("every event in the ledger", lambda: wanted <= set(self.ledger.handlings()), timeout_s=60)
        time.sleep(1.0)  # a duplicate would arrive about now
        counts = self.ledger.handlings()
        for line in self.ledger.lines():
            say(f"   {line['daemon']:<17} on {line['node']:<7} handled {line['event_id'][:18]:<18} "
                f"{line['config_key']:<12} from {line['source'] or '(foreign)'}")
        twice = {key: n for key, n in counts.items() if n != 1}
        if twice:
            raise DemoFailure(f"handled more than once: {twice}")
        say(f"   {len(wanted)} handlings, each exactly once.")

    def poison_and_redrive(self) -> None:
        step(6, "A poison event", "SELFPLAY_COMPLETE for board hex19, which the ledger is not configured for: "
             "the handler raises, the router retries it, then writes a dead letter.")
        self.before_poison = datetime.now(UTC)
        done = coord("publish", "SELFPLAY_COMPLETE", "--payload", json.dumps({"config_key": "hex19_3p", "games": 4}),
                     "--bus", "cross", env=self.env)
        poison_id = done.stdout.split("event_id=", 1)[1].split()[0]

        def letter() -> dict[str, object] | None:
            rows = coord_json("dlq", "list", "--type", "SELFPLAY_COMPLETE", env=self.env)
            return next((row for row in rows if row.get("event_id") == poison_id), None)

        row = wait_for("the dead letter of the poison event", letter, timeout_s=60, every_s=1.0)
        letter_id = str(row["dead_letter_id"])
        show(coord("dlq", "show", letter_id, env=self.env).stdout)
        say("   The fix: add hex19 to the ledger's boards, then re-drive the dead letter to its group.")
        boards = self.ledger.directory / "boards.txt"
        boards.write_text("hex8\nsquare8\nsquare19\nhex19\n")
        show(coord("dlq", "redrive", letter_id, env=self.env).stdout)
        wait_for("the re-driven event in the ledger", lambda: self.ledger.by_config("hex19_3p"), timeout_s=60)
        again = coord("dlq", "redrive", letter_id, env=self.env, check=False)
        show(again.stdout or again.stderr)
        time.sleep(1.0)
        handled = self.ledger.by_config("hex19_3p")
        if len(handled) != 1:
            raise DemoFailure(f"the re-driven event was handled {len(handled)} times, not once")
        say(f"   handled once after the fix, by {handled[0]['daemon']} on {handled[0]['node']}.")

    def status(self) -> None:
        step(7, "`coord status`", "The cluster from the brokers alone: node heartbeats on a compacted Kafka "
             "topic, consumer-group lag, dead letters.")
        wait_for("both nodes in `coord status`",
                 lambda: {"node-a", "node-b"} <= {n.get("node_id") for n in self._nodes()}, timeout_s=30)
        show(coord("status", env=self.env).stdout)
        depth = coord_json("status", env=self.env)["dlq_depth"]
        if depth != 0:
            raise DemoFailure(f"`coord status` counts {depth} dead letters waiting; the re-driven one should not count")
        say("   dead letters waiting: 0 (the poison event's letter is re-driven)")

    def _nodes(self) -> list[dict[str, object]]:
        report = coord_json("status", env=self.env)
        return list(report.get("nodes", []))

    def stop_nodes(self) -> None:
        step(8, "A clean stop", "SIGTERM: daemons stop dependents first, consumers commit what they "
             "acknowledged, the last heartbeat says stopped.")
        for node in (self.b, self.a):
            node.stop()
            say(f"   {node.node_id} stopped cleanly (exit 0)")

    def replay(self) -> None:
        step(9, "Replay minutes of the cross bus to one group", "GAME_LEDGER's group is moved back to the demo's "
             "start, up to the poison event (its members are stopped, as Kafka requires); node A starts again "
             "and its ledger daemon handles each of those events exactly once more.")
        window = ("--since", self.started_at.isoformat(), "--until", self.before_poison.isoformat())
        show(coord("replay", "--bus", "cross", *window, "--to-group", GROUP, "--dry-run", env=self.env).stdout)
        show(coord("replay", "--bus", "cross", *window, "--to-group", GROUP, env=self.env).stdout)
        before = self.ledger.handlings()
        cross = {(LEDGER, event_id) for event_id, daemons in self.expected.items() if LEDGER in daemons}
        show(self.a.start())
        wait_for("every cross-bus event handled again",
                 lambda: all(self.ledger.handlings()[key] >= 2 for key in cross), timeout_s=60)
        time.sleep(1.0)
        after = self.ledger.handlings()
        wrong = {key: after[key] for key in cross if after[key] != before[key] + 1}
        if wrong:
            raise DemoFailure(f"after the replay these were not handled exactly once more: {wrong}")
        if len(self.ledger.by_config("hex19_3p")) != 1:
            raise DemoFailure("the poison event, published after the replayed range, was handled again")
        say(f"   {len(cross)} events replayed to {GROUP}, each handled exactly once more.")
        self.a.stop()
        say("   node-a stopped cleanly (exit 0)")

    def cleanup(self) -> None:
        for node in (self.a, self.b):
            node.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-a", default=os.environ.get("RINGRIFT_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--redis-b", default="redis://127.0.0.1:6380/0")
    parser.add_argument("--kafka", default=os.environ.get("RINGRIFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledger)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ringrift-demo-"))
    demo = Demo(args.redis_a, args.redis_b, args.kafka, work)
    began = time.monotonic()
    say(f"ringrift coordination demo: namespace {demo.namespace}, work directory {work}")
    try:
        demo.start_nodes()
        asyncio.run(demo.publish_from_python())
        demo.publish_from_coord()
        demo.publish_from_other_languages()
        demo.check_once_each()
        demo.poison_and_redrive()
        demo.status()
        demo.stop_nodes()
        demo.replay()
    except DemoFailure as exc:
        say(f"\nDEMO FAILED: {exc}\n(logs and ledger kept in {work})")
        return 1
    finally:
        demo.cleanup()
    say(f"\nDone in {time.monotonic() - began:.0f} s: every step did what it said.")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
