"""Prometheus metrics of a node, read at scrape time from the daemon manager, the routers of the
process and the node agent's latest heartbeat; only handler durations are recorded as they happen.

    registry = node_registry(manager, router, heartbeat=lambda: beat.last)
    text = prometheus_client.generate_latest(registry)

Families (counters are the routers' own counts, so a restarted daemon's router starts again at 0):

    ringrift_daemon_state{daemon,state}                 1 for the daemon's current state, 0 for the others
    ringrift_daemon_restarts{daemon}                    restarts counted against max_restarts
    ringrift_daemon_healthy{daemon}                     1 when the daemon is healthy
    ringrift_liveness, ringrift_readiness               the manager's probes
    ringrift_events_published_total{group,bus}          per router: the process's and each consumer daemon's
    ringrift_events_consumed_total{group,event_type}    dispatched to the handlers
    ringrift_events_consumed_by_bus_total{group,bus}
    ringrift_events_deduplicated_total{group,kind}      kind: id | content
    ringrift_events_dead_lettered_total{group}
    ringrift_events_total{group,what,bus,event_type}    what: published | consumed | deduplicated | dead_lettered
    ringrift_handler_failures_total{group,kind}         failed handler attempts; kind: error | timeout
    ringrift_spool_depth{bus}                           records waiting in the process router's spool
    ringrift_handler_duration_seconds{event_type,handler,outcome}   histogram of handler attempts (ok | error)
    ringrift_consumer_lag{daemon,bus,topic,group}       records behind, as the latest heartbeat measured them
    ringrift_is_leader                                  1 when this process leads the namespace (heartbeat)

The histogram is fed by `coordination.handlers` observers (`install_handler_metrics()`, which
`node_registry` calls), so it covers every router of the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from coordination.daemon_types import DaemonState
from coordination.handlers import add_handler_observer
from coordination.node_heartbeat import daemon_routers

__all__ = ["HANDLER_DURATION", "HeartbeatSource", "NodeCollector", "install_handler_metrics", "node_registry"]

HeartbeatSource = Callable[[], Mapping[str, Any] | None]

HANDLER_DURATION = Histogram(
    "ringrift_handler_duration_seconds", "Duration of one handler attempt", ["event_type", "handler", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=None)
_BUS_OF_ORIGIN = {"data_bus": "data", "stage_bus": "stage", "cross_process": "cross"}


def _observe_handler(event_type: str, handler: str, duration_s: float, ok: bool) -> None:
    HANDLER_DURATION.labels(event_type, handler, "ok" if ok else "error").observe(duration_s)


def install_handler_metrics() -> None:
    """Feed HANDLER_DURATION from every handler attempt of the process. Idempotent."""
    add_handler_observer(_observe_handler)


def node_registry(manager: Any, router: Any = None, *, heartbeat: HeartbeatSource | None = None) -> CollectorRegistry:
    """A registry with the node's families (its own, so several servers in one process do not clash)."""
    install_handler_metrics()
    registry = CollectorRegistry()
    registry.register(NodeCollector(manager, router, heartbeat))  # type: ignore[arg-type]
    registry.register(HANDLER_DURATION)
    return registry


class NodeCollector:
    """Reads the manager, the routers and the heartbeat at each scrape (no state of its own)."""

    def __init__(self, manager: Any, router: Any = None, heartbeat: HeartbeatSource | None = None) -> None:
        self._manager = manager
        self._router = router
        self._heartbeat = heartbeat

    def collect(self) -> Iterator[Metric]:
        yield from self._daemon_metrics()
        routers = self._routers()
        if routers:
            yield from self._router_metrics(routers)
        if self._router is not None:
            depth = GaugeMetricFamily("ringrift_spool_depth", "Records waiting in the spool", labels=["bus"])
            for bus, count in sorted(self._router.get_stats().get("spool_depth", {}).items()):
                depth.add_metric([bus], float(count))
            yield depth
        beat = self._heartbeat() if self._heartbeat is not None else None
        if beat is not None:
            yield from self._heartbeat_metrics(beat)

    def _routers(self) -> list[Any]:
        found = {} if self._router is None else {id(self._router): self._router}
        for router in daemon_routers(self._manager).values():
            found.setdefault(id(router), router)
        return list(found.values())

    def _daemon_metrics(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("ringrift_daemon_state", "1 for the daemon's current state",
                                  labels=["daemon", "state"])
        restarts = GaugeMetricFamily("ringrift_daemon_restarts", "Restarts counted against max_restarts",
                                     labels=["daemon"])
        healthy = GaugeMetricFamily("ringrift_daemon_healthy", "1 when the daemon is healthy", labels=["daemon"])
        for key, entry in self._manager.get_all_daemon_health().items():
            name = key.value
            for candidate in DaemonState:
                state.add_metric([name, candidate.value], 1.0 if entry["state"] == candidate.value else 0.0)
            restarts.add_metric([name], float(entry["restart_count"]))
            healthy.add_metric([name], 1.0 if entry["healthy"] else 0.0)
        yield from (state, restarts, healthy)
        yield GaugeMetricFamily("ringrift_liveness", "1 when the liveness probe passes",
                                value=1.0 if self._manager.liveness_probe() else 0.0)
        yield GaugeMetricFamily("ringrift_readiness", "1 when the readiness probe passes",
                                value=1.0 if self._manager.readiness_probe() else 0.0)

    @staticmethod
    def _router_metrics(routers: list[Any]) -> Iterator[Metric]:
        published = CounterMetricFamily("ringrift_events_published", "Events written, per bus",
                                        labels=["group", "bus"])
        consumed = CounterMetricFamily("ringrift_events_consumed", "Events dispatched to handlers, per type",
                                       labels=["group", "event_type"])
        by_bus = CounterMetricFamily("ringrift_events_consumed_by_bus", "Events dispatched to handlers, per bus",
                                     labels=["group", "bus"])
        dedup = CounterMetricFamily("ringrift_events_deduplicated", "Deliveries dropped as duplicates",
                                    labels=["group", "kind"])
        dead = CounterMetricFamily("ringrift_events_dead_lettered", "Dead letters written", labels=["group"])
        failures = CounterMetricFamily("ringrift_handler_failures", "Failed handler attempts",
                                       labels=["group", "kind"])
        flow = CounterMetricFamily("ringrift_events", "Events per type and bus: published, consumed (dispatched), "
                                   "deduplicated, dead-lettered", labels=["group", "what", "bus", "event_type"])
        for router in routers:
            group, stats = router.config.group, router.get_stats()
            for bus, count in sorted(stats.get("published", {}).items()):
                published.add_metric([group, bus], float(count))
            for event_type, count in sorted(stats.get("events_routed", {}).items()):
                consumed.add_metric([group, event_type], float(count))
            for origin, count in sorted(stats.get("events_by_source", {}).items()):
                by_bus.add_metric([group, _BUS_OF_ORIGIN.get(origin, origin)], float(count))
            dedup.add_metric([group, "id"], float(stats.get("duplicates_prevented", 0)))
            dedup.add_metric([group, "content"], float(stats.get("content_duplicates_prevented", 0)))
            dead.add_metric([group], float(stats.get("dead_lettered", 0)))
            failures.add_metric([group, "error"], float(stats.get("handler_errors", 0)))
            failures.add_metric([group, "timeout"], float(stats.get("handler_timeouts", 0)))
            for row in stats.get("flow", ()):
                flow.add_metric([group, row["what"], row["bus"], row["event_type"]], float(row["count"]))
        yield from (published, consumed, by_bus, dedup, dead, failures, flow)

    @staticmethod
    def _heartbeat_metrics(beat: Mapping[str, Any]) -> Iterator[Metric]:
        lag = GaugeMetricFamily("ringrift_consumer_lag", "Records the group has not yet handled (latest heartbeat)",
                                labels=["daemon", "bus", "topic", "group"])
        for name, daemon in sorted(beat.get("daemons", {}).items()):
            for consumer in daemon.get("consumers", ()):
                if consumer.get("behind") is not None:
                    lag.add_metric([name, consumer["bus"], consumer["topic"], consumer["group"]],
                                   float(consumer["behind"]))
        yield lag
        yield GaugeMetricFamily("ringrift_is_leader", "1 when this process leads the namespace",
                                value=1.0 if beat.get("is_leader") else 0.0)
