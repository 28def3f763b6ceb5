"""The built-in daemons and the profiles made of daemons that are implemented.

`register_builtin_daemons(manager, router)` registers EVENT_ROUTER (the router's bus readers),
HEALTH_SERVER, DAEMON_WATCHDOG, DLQ_RETRY and the sync daemons (DATA_SERVER, AUTO_SYNC,
EPHEMERAL_SYNC, MODEL_DISTRIBUTION, NPZ_DISTRIBUTION); `get_daemon_manager()` does it for the
process's manager, whose profiles are `IMPLEMENTED_PROFILES`. The catalog's profiles
(`DAEMON_PROFILES`) name daemons that do domain work (training, evaluation); they join these
profiles as they are built.

Sync placement follows the catalog: AUTO_SYNC in coordinator, training_node, ephemeral and
selfplay; MODEL_DISTRIBUTION and NPZ_DISTRIBUTION in coordinator. Two additions: DATA_SERVER joins
every profile with AUTO_SYNC (the catalog has it only in `full`, but a pull needs its peers to serve,
so AUTO_SYNC depends on it), and EPHEMERAL_SYNC joins `ephemeral` (the catalog folds it into
AUTO_SYNC's ephemeral strategy; here it is its own daemon). The sync daemons need
RINGRIFT_CLUSTER_SECRET (and RINGRIFT_DATA_DIR, RINGRIFT_DATA_PORT: coordination.daemons.data_server).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordination.daemon_types import DaemonType
from coordination.daemons import (
    auto_sync,
    data_server,
    dlq_retry,
    ephemeral_sync,
    event_router_daemon,
    health_server,
    watchdog,
)
from coordination.daemons.model_distribution import ModelDistributionDaemon
from coordination.daemons.npz_distribution import NpzDistributionDaemon
from coordination.event_router import UnifiedEventRouter

__all__ = ["IMPLEMENTED_PROFILES", "register_builtin_daemons"]

_INFRASTRUCTURE = (DaemonType.EVENT_ROUTER, DaemonType.HEALTH_SERVER, DaemonType.DAEMON_WATCHDOG)

_SYNC = (DaemonType.DATA_SERVER, DaemonType.AUTO_SYNC)

IMPLEMENTED_PROFILES: dict[str, tuple[DaemonType, ...]] = {
    "minimal": (DaemonType.EVENT_ROUTER,),
    "ephemeral": (DaemonType.EVENT_ROUTER, DaemonType.HEALTH_SERVER, *_SYNC, DaemonType.EPHEMERAL_SYNC),
    "selfplay": (*_INFRASTRUCTURE, *_SYNC),
    "training_node": (*_INFRASTRUCTURE, *_SYNC),
    "coordinator": (*_INFRASTRUCTURE, DaemonType.DLQ_RETRY, *_SYNC, DaemonType.MODEL_DISTRIBUTION,
                    DaemonType.NPZ_DISTRIBUTION),
}


def register_builtin_daemons(manager: Any, router: UnifiedEventRouter | Callable[[], UnifiedEventRouter],
                             **health_server_options: Any) -> None:
    """Register the built-in daemons on `manager`; `router` may be a callable giving it lazily."""
    resolve = router if callable(router) and not isinstance(router, UnifiedEventRouter) else (lambda: router)
    manager.register_factory(DaemonType.EVENT_ROUTER, lambda: event_router_daemon.factory(resolve())())
    needs_router = [DaemonType.EVENT_ROUTER]
    manager.register_factory(DaemonType.HEALTH_SERVER,
                             lambda: health_server.factory(manager, resolve(), **health_server_options)(),
                             depends_on=needs_router)
    manager.register_factory(DaemonType.DAEMON_WATCHDOG, watchdog.factory(manager), depends_on=needs_router)
    manager.register_factory(DaemonType.DLQ_RETRY, lambda: dlq_retry.factory(manager, resolve())(),
                             depends_on=needs_router)
    _register_sync_daemons(manager, resolve)


def _register_sync_daemons(manager: Any, resolve: Callable[[], UnifiedEventRouter]) -> None:
    """The sync daemons; each is built on the node's router configuration (namespace, node id, brokers)."""
    needs_router = [DaemonType.EVENT_ROUTER]
    serving = [DaemonType.EVENT_ROUTER, DaemonType.DATA_SERVER]
    manager.register_factory(DaemonType.DATA_SERVER,
                             lambda: data_server.factory(node_id=resolve().config.node_id)(), depends_on=needs_router)
    manager.register_factory(DaemonType.AUTO_SYNC, auto_sync.factory(manager, resolve), depends_on=serving)
    manager.register_factory(DaemonType.EPHEMERAL_SYNC, ephemeral_sync.factory(manager, resolve), depends_on=serving)
    manager.register_factory(DaemonType.MODEL_DISTRIBUTION, lambda: ModelDistributionDaemon(resolve().config),
                             depends_on=needs_router)
    manager.register_factory(DaemonType.NPZ_DISTRIBUTION, lambda: NpzDistributionDaemon(resolve().config),
                             depends_on=needs_router)
