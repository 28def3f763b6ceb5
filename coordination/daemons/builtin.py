"""The built-in daemons and the profiles made of daemons that are implemented.

`register_builtin_daemons(manager, router)` registers EVENT_ROUTER (the router's bus readers),
HEALTH_SERVER, DAEMON_WATCHDOG and DLQ_RETRY; `get_daemon_manager()` does it for the process's
manager, whose profiles are `IMPLEMENTED_PROFILES`. The catalog's profiles (`DAEMON_PROFILES`) name
daemons that do domain work (sync, training, evaluation); they join these profiles as they are built.
Until then `selfplay` and `training_node` hold the same infrastructure daemons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordination.daemon_types import DaemonType
from coordination.daemons import dlq_retry, event_router_daemon, health_server, watchdog
from coordination.event_router import UnifiedEventRouter

__all__ = ["IMPLEMENTED_PROFILES", "register_builtin_daemons"]

_INFRASTRUCTURE = (DaemonType.EVENT_ROUTER, DaemonType.HEALTH_SERVER, DaemonType.DAEMON_WATCHDOG)

IMPLEMENTED_PROFILES: dict[str, tuple[DaemonType, ...]] = {
    "minimal": (DaemonType.EVENT_ROUTER,),
    "ephemeral": (DaemonType.EVENT_ROUTER, DaemonType.HEALTH_SERVER),
    "selfplay": _INFRASTRUCTURE,
    "training_node": _INFRASTRUCTURE,
    "coordinator": (*_INFRASTRUCTURE, DaemonType.DLQ_RETRY),
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
