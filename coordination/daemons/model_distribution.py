"""MODEL_DISTRIBUTION: after MODEL_PROMOTED, every node gets the promoted model.

On `MODEL_PROMOTED {model_path, config_key, ...}` (one process in the cluster handles each event):
MODEL_DISTRIBUTION_STARTED, then a high-priority sync of that one file to every live sync peer (each
pulls it from whichever node holds the newest version, over the data plane), waiting for every
node's confirmation, then MODEL_DISTRIBUTION_COMPLETE {model_path, models_distributed (nodes that
confirmed), target_hosts, bytes_transferred, duration, request_id} or MODEL_DISTRIBUTION_FAILED
{model_path, error, errors, ...}. An event without a usable model_path gets MODEL_DISTRIBUTION_FAILED
at once (nothing to retry).

Registration (coordination.daemons.builtin):

    manager.register_factory(DaemonType.MODEL_DISTRIBUTION, ModelDistributionDaemon.factory(),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import logging
from typing import Any

from coordination.daemon_types import DaemonType
from coordination.daemons.distribution import DistributionDaemon, data_path
from schemas.envelope import RouterEvent

__all__ = ["ModelDistributionDaemon"]

log = logging.getLogger(__name__)


class ModelDistributionDaemon(DistributionDaemon):
    daemon_type = DaemonType.MODEL_DISTRIBUTION
    subscriptions = ("MODEL_PROMOTED",)

    async def _announce(self, event_type: str, payload: dict[str, Any]) -> None:
        await self.router.publish(event_type, payload, source=f"model_distribution:{self.config.node_id}")

    async def handle(self, event: RouterEvent) -> None:
        promoted = event.payload
        config_key = str(promoted.get("config_key") or promoted.get("config") or "")
        try:
            path = data_path("models", str(promoted.get("model_path") or ""))
        except ValueError as exc:
            await self._announce("MODEL_DISTRIBUTION_FAILED", {"model_path": promoted.get("model_path"),
                                                               "config_key": config_key, "error": str(exc)})
            return
        await self._announce("MODEL_DISTRIBUTION_STARTED", {"model_path": path, "config_key": config_key,
                                                            "model_id": promoted.get("model_id", "")})
        response = await self.distribute(path, "models", None)
        summary = {"model_path": path, "config_key": config_key, "request_id": response.details.get("request_id"),
                   "models_distributed": response.nodes_synced,
                   "target_hosts": len(response.details.get("targets", [])),
                   "bytes_transferred": response.bytes_transferred, "duration": round(response.duration_seconds, 3)}
        if response.success:
            await self._announce("MODEL_DISTRIBUTION_COMPLETE", summary)
        else:
            log.warning("distribution of %s incomplete: %s", path, "; ".join(response.errors))
            await self._announce("MODEL_DISTRIBUTION_FAILED", {**summary, "error": "; ".join(response.errors),
                                                               "errors": response.errors})
