"""NPZ_DISTRIBUTION: after NPZ_EXPORT_COMPLETE, the training nodes get the exported file.

On `NPZ_EXPORT_COMPLETE {output_path, success, config_key, ...}` (one process in the cluster handles
each event) it syncs that one file, at high priority, to the training nodes, waiting for their
confirmation; the targets' DATA_SYNC_COMPLETED / _FAILED answers are the outcome (the catalog has no
NPZ distribution events). Training nodes are the nodes whose latest node-agent heartbeat
(`<ns>.nodes`, coordination.node_heartbeat) says profile "training_node" and state "running". An export
that failed, names no file, or finds no training node is logged and left alone.

Registration (coordination.daemons.builtin):

    manager.register_factory(DaemonType.NPZ_DISTRIBUTION, NpzDistributionDaemon.factory(),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import logging
import time

from brokers.base import Broker
from coordination.daemon_types import DaemonType
from coordination.daemons.distribution import DistributionDaemon, data_path
from coordination.node_heartbeat import HeartbeatReader, heartbeat_topic, node_state
from schemas.envelope import RouterEvent

__all__ = ["TRAINING_PROFILE", "NpzDistributionDaemon", "training_nodes"]

log = logging.getLogger(__name__)

TRAINING_PROFILE = "training_node"


async def training_nodes(reader: HeartbeatReader, now: float | None = None) -> list[str]:
    """Nodes whose newest heartbeat says a running training_node."""
    beats = await reader.refresh()
    now = time.time() if now is None else now
    return sorted(n for n, beat in beats.items()
                  if beat.get("profile") == TRAINING_PROFILE and node_state(beat, now) == "running")


class NpzDistributionDaemon(DistributionDaemon):
    daemon_type = DaemonType.NPZ_DISTRIBUTION
    subscriptions = ("NPZ_EXPORT_COMPLETE",)
    _heartbeats: tuple[Broker, HeartbeatReader] | None = None  # the reader folds heartbeats as they come

    async def handle(self, event: RouterEvent) -> None:
        export = event.payload
        if export.get("success") is False or not export.get("output_path"):
            log.info("NPZ export %s: nothing to distribute (failed or no output_path)", event.event_id)
            return
        try:
            path = data_path("npz", str(export["output_path"]))
        except ValueError as exc:
            log.warning("NPZ export %s not distributed: %s", event.event_id, exc)
            return
        broker = await self.facade.reader()
        if self._heartbeats is None or self._heartbeats[0] is not broker:
            self._heartbeats = (broker, HeartbeatReader(broker, heartbeat_topic(self.config)))
        targets = await training_nodes(self._heartbeats[1])
        if not targets:
            log.warning("NPZ export %s (%s): no running training node to send it to", event.event_id, path)
            return
        response = await self.distribute(path, "npz", targets)
        if not response.success:
            log.warning("distribution of %s incomplete: %s", path, "; ".join(response.errors))
