"""The node agent: one process per node running a profile's daemons until SIGTERM/SIGINT.

    agent = NodeAgent("coordinator", heartbeat_interval_s=5.0)
    await agent.run(on_ready=print)          # returns after a signal, once everything stopped

`run()`:
1. starts the process router (`get_router()`, configured from RINGRIFT_*): this connects Redis and
   Kafka within the router's retry budget, so an unreachable broker fails the start with
   `NodeAgentError` instead of leaving a supervisor restarting the router in the background;
2. starts the profile with the process's DaemonManager (`get_daemon_manager()` registers the
   built-ins), plus HEALTH_SERVER when the profile lacks it (a node always answers /healthz), plus the
   daemons of the plugins (`plugins`, default RINGRIFT_PLUGINS; see coordination.plugins); the agent
   registers HEALTH_SERVER again so that /metrics and /status carry its latest heartbeat; with the
   coordinator profile it first bootstraps the coordinators on its router (coordination_bootstrap);
3. joins the namespace's leader election (`agent.leadership`, coordination.daemons.leader; a
   leader_only daemon of this process can wait on it) and learns other nodes' leadership from
   LEADER_ELECTED / LEADER_LOST;
4. publishes a heartbeat every `heartbeat_interval_s` (coordination.node_heartbeat: daemons, lag,
   leader, spool depth), which `coord status` folds;
5. on the signal: shuts the coordinators down, leaves the election (a successor takes over at once),
   `manager.shutdown()` (daemons stop, dependents first), a last heartbeat with state "stopped", `router.stop()`
   (consumers commit, spool drainer stopped with its records kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from brokers.errors import BrokerError
from coordination import __version__
from coordination.coordination_bootstrap import bootstrap_coordination, shutdown_coordination
from coordination.daemon_manager import DaemonManager, get_daemon_manager
from coordination.daemon_state_store import default_state_path
from coordination.daemon_types import DaemonManagerConfig, DaemonType
from coordination.daemons import health_server
from coordination.daemons.health_server import HealthServerSettings
from coordination.daemons.leader import Leadership
from coordination.event_router import RouterEvent, UnifiedEventRouter, get_router
from coordination.node_heartbeat import NodeHeartbeat, NodeIdentity
from coordination.plugins import PluginError, load_plugins, plugins_from_env

__all__ = ["LeaderTracker", "NodeAgent", "NodeAgentError"]

log = logging.getLogger(__name__)


class NodeAgentError(Exception):
    """The agent could not start (a broker unreachable, an unknown profile, a daemon that failed)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # a broker could not be reached within the retry budget


class LeaderTracker:
    """Who leads the namespace as far as this node knows: itself while its candidacy leads, else the
    node named by the last LEADER_ELECTED it saw (None after that node's LEADER_LOST)."""

    def __init__(self, leadership: Leadership, node_id: str) -> None:
        self.leadership = leadership
        self.node_id = node_id
        self._seen: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    @property
    def leader_id(self) -> str | None:
        return self.node_id if self.is_leader else self._seen

    async def on_event(self, event: RouterEvent) -> None:
        node = event.payload.get("node_id")
        if not isinstance(node, str):
            return
        if event.event_type == "LEADER_ELECTED":
            self._seen = node
            log.info("leader of the namespace: %s", node)
        elif self._seen == node:
            self._seen = None
            log.info("%s no longer leads the namespace", node)


class NodeAgent:
    def __init__(self, profile: str, *, heartbeat_interval_s: float = 5.0, shutdown_timeout_s: float | None = None,
                 router: UnifiedEventRouter | None = None, manager: DaemonManager | None = None,
                 plugins: list[str] | None = None) -> None:
        self.profile = profile
        self.plugins = plugins_from_env() if plugins is None else plugins
        self.heartbeat_interval_s = heartbeat_interval_s
        # the API reference's job grace period bounds how long the daemons get to stop
        self.shutdown_timeout_s = shutdown_timeout_s if shutdown_timeout_s is not None else \
            _env_seconds("RINGRIFT_JOB_GRACE_PERIOD", 60.0)
        self.router = router or get_router()
        self.manager = manager or get_daemon_manager(DaemonManagerConfig.from_env())
        self.leadership = Leadership(self.router.config, router=self.router)
        self.leader = LeaderTracker(self.leadership, self.node_id)
        self.health_port: int | None = None
        self.heartbeat: NodeHeartbeat | None = None
        self._started_at = time.time()
        self._stop = asyncio.Event()

    @property
    def node_id(self) -> str:
        return self.router.config.node_id

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[str], None] = print) -> None:
        """Start, report ready, wait for a signal (or `request_stop()`), stop everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        beating: asyncio.Task[None] | None = None
        try:
            await self._start()
            if self.heartbeat is not None:
                beating = asyncio.create_task(self.heartbeat.run(), name="node-heartbeat")
            on_ready(self._ready_line())
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if beating is not None:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
            await self._shutdown()

    async def _start(self) -> None:
        if self.profile not in self.manager.profiles:
            known = ", ".join(sorted(self.manager.profiles))
            raise NodeAgentError(f"unknown profile {self.profile!r}; profiles: {known}")
        try:
            extra = load_plugins(self.plugins, self.manager)
        except PluginError as exc:
            raise NodeAgentError(str(exc)) from None
        for event_type in ("LEADER_ELECTED", "LEADER_LOST"):
            self.router.subscribe(event_type, self.leader.on_event)
        try:
            await self.router.start()
        except BrokerError as exc:
            raise NodeAgentError(f"cannot start: {type(exc).__name__}: {exc}", unreachable=exc.retriable) from None
        self._register_health_server()
        if self.runs_coordinators:
            status = bootstrap_coordination(router=self.router)
            for error in status["errors"]:
                log.warning("coordination bootstrap: %s", error)
        results = await self.manager.start_all(self.profile)
        for daemon_type in (DaemonType.HEALTH_SERVER, *extra):
            if daemon_type not in results:
                results[daemon_type] = await self.manager.start(daemon_type)
        failed = [t for t, ok in results.items() if not ok]
        if failed:
            raise NodeAgentError(f"daemons did not start: {', '.join(self._why_not(t) for t in failed)}")
        self.health_port = await self._health_port()
        beat = NodeHeartbeat(self._identity(), self.router.config, self.manager, self.router, self.leader,
                             daemons=[getattr(t, "value", str(t)) for t in results])
        try:
            await self.leadership.start()
            if self.heartbeat_interval_s > 0:
                await beat.start()
                self.heartbeat = beat
        except BrokerError as exc:
            await beat.close()
            raise NodeAgentError(f"cannot start the election or the heartbeat: {exc}",
                                 unreachable=exc.retriable) from None

    def _register_health_server(self) -> None:
        info = self.manager.get_daemon_info(DaemonType.HEALTH_SERVER)
        depends_on = info.depends_on if info is not None else [DaemonType.EVENT_ROUTER]
        self.manager.register_factory(DaemonType.HEALTH_SERVER,
                                      health_server.factory(self.manager, self.router, heartbeat=self._last_beat),
                                      depends_on=depends_on)

    def _last_beat(self) -> dict[str, Any] | None:
        return self.heartbeat.last if self.heartbeat is not None else None

    def _identity(self) -> NodeIdentity:
        return NodeIdentity(node_id=self.node_id, profile=self.profile, host=socket.gethostname(), pid=os.getpid(),
                            version=__version__, started_at=self._started_at, interval_s=self.heartbeat_interval_s,
                            health_url=self._health_url())

    def _why_not(self, daemon_type: Any) -> str:
        name = getattr(daemon_type, "name", str(daemon_type))
        if self.manager.is_permanently_failed(daemon_type):
            return (f"{name} (permanently failed in an earlier run of this node; the state in "
                    f"{default_state_path()} expires after 24 h, or delete it)")
        return name

    async def _health_port(self, timeout_s: float = 10.0) -> int | None:
        """The health server's port once it listens (its instance is made by the supervisor's task)."""
        async with asyncio.timeout(timeout_s):
            while True:
                info = self.manager.get_daemon_info(DaemonType.HEALTH_SERVER)
                if info is None:
                    return None
                if info.instance is not None:
                    return int(await info.instance.started(timeout_s))
                await asyncio.sleep(0.05)

    def _health_url(self) -> str | None:
        if not self.health_port:
            return None
        host = HealthServerSettings.from_env().host
        if host in ("", "0.0.0.0", "::"):  # listening everywhere: name the host others can reach
            host = socket.gethostname()
        return f"http://{host}:{self.health_port}"

    def _ready_line(self) -> str:
        report = self.manager.status_report()["daemons"]
        daemons = ", ".join(name for name, entry in report.items() if entry["state"] == "running")
        url = self._health_url()
        health = f"{url}/healthz" if url else "none"
        return (f"node {self.node_id} ready: profile {self.profile} (pid {os.getpid()}); daemons: {daemons}; "
                f"health: {health}")

    @property
    def runs_coordinators(self) -> bool:
        """The coordinator profile's agent bootstraps the coordinators (their live views of tasks,
        training, models, nodes, sync) on its router, unless `enable_coordination_wiring` is off."""
        return self.profile == "coordinator" and self.manager.config.enable_coordination_wiring

    async def _shutdown(self) -> None:
        if self.runs_coordinators:
            shutdown_coordination()
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(10.0):
                await self.leadership.stop()  # while the router runs: LEADER_LOST is announced
        spool_depth = self.heartbeat.spool_depth() if self.heartbeat is not None else None
        try:
            await self.manager.shutdown(timeout=self.shutdown_timeout_s, force=True)
            if self.heartbeat is not None:
                with contextlib.suppress(BrokerError, TimeoutError):
                    async with asyncio.timeout(5.0):
                        await self.heartbeat.send("stopped", spool_depth=spool_depth)
        finally:
            await self.router.stop()
            if self.heartbeat is not None:
                await self.heartbeat.close()
                self.heartbeat = None


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise NodeAgentError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise NodeAgentError(f"{name}={raw!r} must be >= 0")
    return value
