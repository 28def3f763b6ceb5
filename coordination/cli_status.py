"""`coord status`: the cluster at a glance from the brokers alone (no SSH).

    coord status                          # nodes, daemons, lag per daemon type, DLQ and spool depth, leader
    coord status --json                   # the same as one JSON document
    coord status --watch [--interval 2]   # redrawn until Ctrl-C (with --json: one JSON line per refresh)

Where each part comes from:
- nodes and their daemons: the node agents' heartbeats (coordination.node_heartbeat) folded by node
  id; a node silent for three of its intervals is "lost", one that stopped cleanly "stopped";
- lag, per consumer group the running or lost nodes report: a group on the cross-process bus is asked
  of the broker now (`Broker.group_lag`); a group on a node's Redis comes from that node's latest
  heartbeat (the node alone reaches its Redis); null ("?") where the broker cannot say;
- DLQ depth: the dead letters on the dead-letter topic; spool depth: the sum of the nodes' latest
  reports (a stopped node's too: its spool waits on its disk until it starts again);
- the leader: the running node whose heartbeat says it leads, else the leader a running node names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from brokers.base import Broker
from brokers.errors import BrokerError, TopicNotFound
from coordination.cli_context import CliSettings, run
from coordination.cli_format import format_ts, print_json, stdout
from coordination.config import RouterConfig
from coordination.dlq import DeadLetterQueue
from coordination.dlq_status import status_store_for
from coordination.node_heartbeat import HeartbeatReader, heartbeat_topic, node_state
from coordination.sync_peers import PeerDirectory, manifests_topic

__all__ = ["build_report", "status_command"]

LagKey = tuple[str, str]  # (topic, group) on the cross-process bus


def build_report(namespace: str, beats: Mapping[str, Mapping[str, Any]], *, now: float,
                 cross_lag: Mapping[LagKey, int | None], dlq_depth: int,
                 transfers: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The status document from the folded heartbeats and what was asked of the brokers;
    `transfers`: files each node is fetching now (from the sync records of AUTO_SYNC)."""
    nodes = []
    for node_id in sorted(beats):
        beat = beats[node_id]
        nodes.append({**beat, "state": node_state(beat, now), "age_s": round(max(0.0, now - beat["sent_at"]), 1),
                      "active_transfers": (transfers or {}).get(node_id, 0)})
    lag: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
    for node in nodes:
        if node["state"] == "stopped":
            continue  # its groups were left on purpose
        for name, daemon in sorted(node.get("daemons", {}).items()):
            for consumer in daemon.get("consumers", ()):
                bus, topic, group = consumer["bus"], consumer["topic"], consumer["group"]
                node_of = None if bus == "cross" else node["node_id"]  # a cross group is cluster-wide
                behind = cross_lag.get((topic, group)) if bus == "cross" else consumer.get("behind")
                lag[(name, topic, group, node_of)] = {"daemon": name, "bus": bus, "topic": topic, "group": group,
                                                      "node_id": node_of, "behind": behind}
    by_daemon: dict[str, int | None] = {}
    for row in lag.values():
        known = by_daemon.get(row["daemon"], 0)
        by_daemon[row["daemon"]] = None if known is None or row["behind"] is None else known + row["behind"]
    live = [n for n in nodes if n["state"] == "running"]
    leaders = [n["node_id"] for n in live if n.get("is_leader")]
    named = [n["leader"] for n in live if n.get("leader")]
    return {"namespace": namespace, "generated_at": now, "leader": (leaders or named or [None])[0],
            "dlq_depth": dlq_depth,
            # a stopped node's spool counts: its records wait on its disk until it starts again
            "spool_depth": sum(int(n.get("spool_depth", {}).get("total", 0)) for n in nodes),
            "nodes": nodes, "lag": list(lag.values()), "lag_by_daemon": dict(sorted(by_daemon.items()))}


class StatusSource:
    """The brokers `coord status` reads, kept open across refreshes (--watch reads only what is new)."""

    def __init__(self, config: RouterConfig, broker: Broker) -> None:
        self.config = config
        self._broker = broker
        self._heartbeats = HeartbeatReader(broker, heartbeat_topic(config))
        self._peers = PeerDirectory(broker, manifests_topic(config.namespace))
        self._letters = status_store_for(config)  # one connection for every refresh of --watch

    async def __aenter__(self) -> StatusSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._letters.close()

    async def report(self) -> dict[str, Any]:
        beats = await self._heartbeats.refresh()
        now = time.time()
        wanted = sorted({(c["topic"], c["group"]) for beat in beats.values() if node_state(beat, now) != "stopped"
                         for daemon in beat.get("daemons", {}).values() for c in daemon.get("consumers", ())
                         if c["bus"] == "cross"})
        lags = await asyncio.gather(*(self._behind(topic, group) for topic, group in wanted))
        depth = await self._dlq_depth()
        peers = await self._peers.refresh()
        transfers = {node: peer.active_transfers for node, peer in peers.items() if peer.is_live(now)}
        return build_report(self.config.namespace, beats, now=now, cross_lag=dict(zip(wanted, lags, strict=True)),
                            dlq_depth=depth, transfers=transfers)

    async def _dlq_depth(self) -> int:
        """Dead letters still waiting for someone: not re-driven and not purged (their status is kept
        by `coord dlq` and DLQ_RETRY in the node's Redis)."""
        try:
            letters = await DeadLetterQueue(self._broker, self.config.dlq_topic).list()
        except TopicNotFound:
            return 0
        statuses = await self._letters.all()
        done = {"redriven", "purged"}
        return sum(1 for letter in letters
                   if getattr(statuses.get(letter.dead_letter_id), "state", "pending") not in done)

    async def _behind(self, topic: str, group: str) -> int | None:
        try:
            return (await self._broker.group_lag(topic, group)).behind
        except (NotImplementedError, TopicNotFound):
            return None


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def render(report: Mapping[str, Any]) -> Group:
    """The report as rich renderables: a summary line, the nodes, the lag per daemon type."""
    states = {"running": "green", "lost": "red", "stopped": "dim"}
    summary = Text.assemble(
        f"namespace {report['namespace']}  ", "leader ", (report["leader"] or "none", "bold"),
        f"  dead letters {report['dlq_depth']}  spooled {report['spool_depth']}  ",
        (f"at {format_ts(report['generated_at'])} UTC", "dim"))
    if not report["nodes"]:
        return Group(summary, Text("no node heartbeats"))
    nodes = Table("node", "state", "profile", "host / pid", "leader", "last heartbeat", "spool", "transfers",
                  "daemons",
                  title=f"{len(report['nodes'])} node(s)", title_justify="left", header_style="bold")
    for node in report["nodes"]:
        daemons = ", ".join(f"{name}={d['state']}" + (f" ({d['restarts']} restarts)" if d.get("restarts") else "")
                            for name, d in sorted(node.get("daemons", {}).items()))
        nodes.add_row(node["node_id"], Text(node["state"], style=states.get(node["state"], "")),
                      node.get("profile", ""), f"{node.get('host', '')} / {node.get('pid', '')}",
                      "yes" if node.get("is_leader") else "", f"{node['age_s']:g} s ago",
                      str(node.get("spool_depth", {}).get("total", 0)), str(node.get("active_transfers", 0)), daemons)
    parts: list[Any] = [summary, nodes]
    if report["lag"]:
        lag = Table("daemon", "behind", "groups", title="consumer lag per daemon type", title_justify="left",
                    header_style="bold")
        for name, behind in report["lag_by_daemon"].items():
            groups = ", ".join(f"{r['group']}@{r['topic']}" + (f" ({r['node_id']})" if r["node_id"] else "") +
                               f"={_count(r['behind'])}" for r in report["lag"] if r["daemon"] == name)
            lag.add_row(name, _count(behind), groups)
        parts.append(lag)
    return Group(*parts)


async def _once(settings: CliSettings, as_json: bool) -> None:
    config = settings.router_config()
    async with settings.open_dlq_broker(config) as broker, StatusSource(config, broker) as source:
        report = await source.report()
    if as_json:
        print_json(report)
    else:
        stdout.print(render(report))


async def _watch(settings: CliSettings, as_json: bool, interval: float) -> None:
    config = settings.router_config()
    async with settings.open_dlq_broker(config) as broker, StatusSource(config, broker) as source:
        report: dict[str, Any] | None = await source.report()  # an unreachable broker fails here, as one line
        live = Live(console=stdout, auto_refresh=False) if not as_json and stdout.is_terminal else None
        with live or contextlib.nullcontext():
            while True:
                if report is not None and live is not None:
                    live.update(render(report), refresh=True)
                elif report is not None and as_json:  # one JSON line per refresh
                    print(json.dumps(report, default=str), flush=True)
                elif report is not None:  # a pipe: one report after the other
                    stdout.print(render(report))
                await asyncio.sleep(interval)
                report = await _refresh(source)


async def _refresh(source: StatusSource) -> dict[str, Any] | None:
    """A new report, or None after saying on stderr why there is none this time (the watch goes on)."""
    try:
        return await source.report()
    except BrokerError as exc:
        click.echo(f"coord: {type(exc).__name__}: {exc} (retrying)", err=True)
        return None


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="print JSON (with --watch: one line per refresh)")
@click.option("--watch", is_flag=True, help="refresh until Ctrl-C")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="SECONDS",
              help="seconds between refreshes with --watch")
@click.pass_obj
def status_command(settings: CliSettings, as_json: bool, watch: bool, interval: float) -> None:
    """Nodes seen (heartbeats), their daemons, consumer lag, dead letters, spool depth, the leader."""
    if not watch:
        run(_once(settings, as_json))
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a watch: not an error
        run(_watch(settings, as_json, interval))
