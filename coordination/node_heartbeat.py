"""Node heartbeats: what a node agent publishes every few seconds, and how a reader folds them.

    beat = NodeHeartbeat(identity, config, manager, router, leader)
    await beat.start()                    # connects, ensures the compacted topic
    task = asyncio.create_task(beat.run())  # a record every identity.interval_s
    await beat.send("stopped")            # the last record of a clean stop; then beat.close()

    reader = HeartbeatReader(broker, heartbeat_topic(config))
    nodes = await reader.refresh()        # {node_id: newest heartbeat}; later calls read only what is new
    node_state(nodes["gpu-3"], time.time())   # "running" | "lost" | "stopped"

The topic is `<ns>.nodes` on the cross-process broker (Kafka, or the memory:// broker standing for
it), compacted and keyed by node id; `<ns>:nodes` on the node's Redis when Kafka is off. A record's
value is one JSON object:

    node_id, profile, host, pid, version, started_at, sent_at, interval_s, health_url
    state        "running", or "stopped" for the last record of a clean stop
    daemons      {name: {"state", "restarts", "healthy", "consumers": [{"bus", "topic", "group", "behind"}]}}
    is_leader    this process leads the namespace (coordination.daemons.leader); leader: the leader's
                 node id when known
    spool_depth  {bus: records, "total": records} waiting in the node's publish spool

`behind` is the consumer group's lag on that topic (`Broker.group_lag(...).behind`) as the node
measured it (it alone reaches its Redis), None when the broker cannot say. Asking Kafka costs a
client connection per group, so lag is measured every LAG_EVERY_S (or each beat, when the interval
is longer) and when a new group appears; beats in between repeat the last measurement. A reader keeps
the newest record per node, as compaction does, and calls a running node silent for more than
LOST_AFTER_INTERVALS of its intervals "lost".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import brokers
from brokers.base import Broker
from brokers.errors import BrokerError, TopicNotFound
from coordination.config import RouterConfig

__all__ = ["LAG_EVERY_S", "LOST_AFTER_INTERVALS", "HeartbeatReader", "LeaderView", "NodeHeartbeat", "NodeIdentity",
           "consumers_of", "daemon_routers", "decode_heartbeat", "encode_heartbeat", "heartbeat_topic", "node_state"]

log = logging.getLogger(__name__)
LOST_AFTER_INTERVALS = 3
LAG_EVERY_S = 15.0
Consumer = tuple[str, str, str]  # (bus, topic, group)


def heartbeat_topic(config: RouterConfig) -> str:
    return f"{config.namespace}.nodes" if config.kafka_enabled else f"{config.namespace}:nodes"


def heartbeat_broker(config: RouterConfig) -> Broker:
    """The broker holding the heartbeat topic (not started): the cross-process one, else Redis."""
    options = {"retry_budget_s": config.publish_retry_budget_s}
    if config.kafka_url is not None:
        return brokers.connect(config.kafka_url, **{**options, **config.kafka_options})
    return brokers.connect(config.redis_url, **{**options, **config.redis_options})


@dataclass(frozen=True)
class NodeIdentity:
    """What does not change while the agent runs."""

    node_id: str
    profile: str
    host: str
    pid: int
    version: str
    started_at: float
    interval_s: float
    health_url: str | None


class LeaderView(Protocol):
    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_id(self) -> str | None: ...


def encode_heartbeat(beat: Mapping[str, Any]) -> bytes:
    return json.dumps(beat, separators=(",", ":"), default=str).encode()


def decode_heartbeat(raw: bytes | None) -> dict[str, Any] | None:
    """The heartbeat in a record's bytes, or None when they are not one (a reader skips those)."""
    if raw is None:
        return None
    try:
        beat = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(beat, dict) or not isinstance(beat.get("node_id"), str) or not beat["node_id"] \
            or not isinstance(beat.get("sent_at"), int | float) or not isinstance(beat.get("state"), str):
        return None
    return beat


def node_state(beat: Mapping[str, Any], now: float) -> str:
    """"stopped" after a clean stop, "lost" when a running node fell silent, else the state it sent."""
    if beat["state"] == "stopped":
        return "stopped"
    interval = beat.get("interval_s")
    interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 5.0
    return "lost" if now - float(beat["sent_at"]) > LOST_AFTER_INTERVALS * interval else str(beat["state"])


def daemon_routers(manager: Any) -> dict[str, Any]:
    """{daemon name: its router} for the running daemons that consume through a router (EVENT_ROUTER
    holds the process's router, a ConsumerDaemon its own); a router shared by several daemons is
    listed once, under the first registered."""
    found, seen = {}, set()
    for info in manager.get_status().values():
        router = getattr(info.instance, "router", None)
        if router is not None and hasattr(router, "get_stats") and hasattr(router, "config") \
                and id(router) not in seen:
            found[info.name] = router
            seen.add(id(router))
    return found


def consumers_of(router: Any) -> list[Consumer]:
    c: RouterConfig = router.config
    topics = {"data": c.data_topic, "stage": c.stage_topic, "cross": c.cross_topic}
    read = [bus for bus in sorted(c.read_buses) if bus in topics and (bus != "cross" or c.kafka_enabled)]
    return [(bus, topics[bus], c.group) for bus in read]


class NodeHeartbeat:
    """Publishes this node's heartbeat; `last` is the newest one sent (the /metrics collector reads it)."""

    def __init__(self, identity: NodeIdentity, config: RouterConfig, manager: Any, router: Any,
                 leader: LeaderView, *, daemons: Iterable[str] = ()) -> None:
        self.identity = identity
        self.topic = heartbeat_topic(config)
        self.last: dict[str, Any] | None = None
        self._config = config
        self._manager = manager
        self._router = router
        self._leader = leader
        self._wanted = frozenset(daemons)  # reported even when stopped; others only while not stopped
        self._broker: Broker | None = None
        self._local: Broker | None = None  # the node's Redis, for the lag of the data and stage buses
        self._lag: dict[Consumer, int | None] = {}
        self._lag_at = float("-inf")  # time.monotonic() of the last measurement

    async def start(self) -> None:
        """Connect and ensure the topic (compacted: only the newest record per node matters)."""
        self._broker = heartbeat_broker(self._config)
        await self._broker.start()
        await self._broker.ensure_topic(self.topic, compacted=True)
        if self._config.kafka_enabled:
            c = self._config
            self._local = brokers.connect(c.redis_url, **{"retry_budget_s": c.publish_retry_budget_s,
                                                          **c.redis_options})
            await self._local.start()
        else:
            self._local = self._broker

    async def close(self) -> None:
        broker, local, self._broker, self._local = self._broker, self._local, None, None
        for item in {id(b): b for b in (local, broker) if b is not None}.values():
            await item.close()

    async def run(self) -> None:
        """Send a heartbeat every interval until cancelled; a missed beat is logged, not fatal."""
        while True:
            try:
                await self.send("running")
            except BrokerError as exc:
                log.warning("heartbeat not sent: %s", exc)
            await asyncio.sleep(self.identity.interval_s)

    async def send(self, state: str, *, spool_depth: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Build and publish one heartbeat (`spool_depth` overrides the router's, e.g. at a stop)."""
        assert self._broker is not None, "start() first"
        routers = daemon_routers(self._manager)
        behind = await self._behind_all(sorted({c for r in routers.values() for c in consumers_of(r)}))
        beat = {**asdict(self.identity), "state": state, "sent_at": time.time(),
                "daemons": self._daemons(routers, behind), "is_leader": self._leader.is_leader,
                "leader": self._leader.leader_id,
                "spool_depth": dict(spool_depth if spool_depth is not None else self.spool_depth())}
        await self._broker.publish_raw(self.topic, encode_heartbeat(beat), key=self.identity.node_id)
        self.last = beat
        return beat

    def spool_depth(self) -> dict[str, int]:
        return dict(self._router.get_stats()["spool_depth"])

    def _daemons(self, routers: Mapping[str, Any], behind: Mapping[Consumer, int | None]) -> dict[str, Any]:
        daemons = {}
        for key, entry in self._manager.get_all_daemon_health().items():
            name = key.value
            if entry["state"] == "stopped" and name not in self._wanted:
                continue  # registered, never asked for
            consumers = [{"bus": bus, "topic": topic, "group": group, "behind": behind.get((bus, topic, group))}
                         for bus, topic, group in (consumers_of(routers[name]) if name in routers else ())]
            daemons[name] = {"state": entry["state"], "restarts": entry["restart_count"],
                             "healthy": entry["healthy"], "consumers": consumers}
        return daemons

    async def _behind_all(self, consumers: list[Consumer]) -> dict[Consumer, int | None]:
        due = time.monotonic() - self._lag_at >= max(self.identity.interval_s, LAG_EVERY_S)
        if due or not set(consumers) <= set(self._lag):
            results = await asyncio.gather(*(self._behind(*c) for c in consumers))
            self._lag, self._lag_at = dict(zip(consumers, results, strict=True)), time.monotonic()
        return self._lag

    async def _behind(self, bus: str, topic: str, group: str) -> int | None:
        broker = self._broker if bus == "cross" else self._local
        assert broker is not None
        try:
            async with asyncio.timeout(max(1.0, self.identity.interval_s)):
                return (await broker.group_lag(topic, group)).behind
        except NotImplementedError:
            return None
        except (BrokerError, TimeoutError) as exc:
            log.debug("lag of %s on %s not measured: %s", group, topic, exc)
            return None


class HeartbeatReader:
    """The newest heartbeat per node on the topic; each `refresh()` reads only the records after the
    last one it saw (one partition: the node agents create the topic with one)."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self._broker = broker
        self._topic = topic
        self._last_id: str | None = None

    async def refresh(self) -> dict[str, dict[str, Any]]:
        try:
            async for record in self._broker.read(self._topic, start_id=self._last_id):
                if record.record_id == self._last_id:
                    continue  # start_id is inclusive
                self._last_id = record.record_id
                beat = decode_heartbeat(record.raw)
                if beat is not None:
                    self.nodes[beat["node_id"]] = beat
        except TopicNotFound:
            pass  # no node agent ever ran in this namespace
        return self.nodes
