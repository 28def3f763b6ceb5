"""`coord status`: the cluster at a glance from the brokers alone (a first, minimal version).

    coord status            # DLQ depth; the nodes seen (latest heartbeat each) and their daemons
    coord status --json

Nodes come from the node agents' heartbeats (`<ns>.nodes`, see coordination.node_agent), read from
the beginning; the latest per node wins. A node whose last heartbeat is older than three of its
intervals is shown as "silent". Consumer-group lag, spool depth and the leader are not shown yet.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from brokers.errors import TopicNotFound
from coordination.cli_context import CliSettings, run
from coordination.cli_format import format_ts, print_json, print_table, stdout
from coordination.dlq import DeadLetterQueue
from coordination.node_agent import heartbeat_topic

__all__ = ["status_command"]


async def _gather(settings: CliSettings) -> dict[str, Any]:
    config = settings.router_config()
    async with settings.open_dlq_broker(config) as broker:
        try:
            depth = len(await DeadLetterQueue(broker, config.dlq_topic).list())
        except TopicNotFound:
            depth = 0
        nodes: dict[str, dict[str, Any]] = {}
        if config.kafka_enabled:
            try:
                async for record in broker.read(heartbeat_topic(config.namespace)):
                    beat = _heartbeat(record.raw)
                    if beat is not None and beat["timestamp"] >= nodes.get(beat["node_id"], {}).get("timestamp", 0):
                        nodes[beat["node_id"]] = beat
            except TopicNotFound:
                pass
    now = time.time()
    for beat in nodes.values():
        if beat.get("status") == "running" and now - beat["timestamp"] > 3 * max(beat.get("interval_s", 5.0), 1.0):
            beat["status"] = "silent"
    return {"namespace": config.namespace, "dlq_depth": depth, "nodes": sorted(nodes.values(),
                                                                                 key=lambda b: b["node_id"])}


def _heartbeat(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        beat = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(beat, dict) or not isinstance(beat.get("node_id"), str) \
            or not isinstance(beat.get("timestamp"), int | float):
        return None
    return beat


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def status_command(settings: CliSettings, as_json: bool) -> None:
    """DLQ depth and the nodes seen, with their daemons' states."""
    report = run(_gather(settings))
    if as_json:
        print_json(report)
        return
    stdout.print(f"namespace {report['namespace']}: {report['dlq_depth']} dead letter(s)")
    if not report["nodes"]:
        stdout.print("no node heartbeats")
        return
    print_table(["node", "status", "profile", "last heartbeat (UTC)", "health port", "daemons"],
                [(b["node_id"], b.get("status", ""), b.get("profile", ""), format_ts(b["timestamp"]),
                  b.get("health_port") or "",
                  ", ".join(f"{name}={state}" for name, state in sorted(b.get("daemons", {}).items())))
                 for b in report["nodes"]], title=f"{len(report['nodes'])} node(s)")
