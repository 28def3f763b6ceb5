"""The node agent: one process per node running a profile's daemons until SIGTERM/SIGINT.

    agent = NodeAgent("coordinator", heartbeat_interval_s=5.0)
    await agent.run(on_ready=print)          # returns after a signal, once everything stopped

`run()`:
1. starts the process router (`get_router()`, configured from RINGRIFT_*): this connects Redis and
   Kafka within the router's retry budget, so an unreachable broker fails the start with
   `NodeAgentError` instead of leaving a supervisor restarting the router in the background;
2. starts the profile with the process's DaemonManager (`get_daemon_manager()` registers the
   built-ins), plus HEALTH_SERVER when the profile lacks it (a node always answers /healthz), plus the
   daemons of the plugins (`plugins`, default RINGRIFT_PLUGINS; see coordination.plugins);
3. publishes a heartbeat every `heartbeat_interval_s` to the Kafka topic `<ns>.nodes`, keyed by node
   id: `{"node_id", "profile", "pid", "health_port", "status", "daemons": {name: state}, "timestamp"}`;
   `coord status` reads it from the beginning and keeps the latest per node. The brokers API creates
   plain topics (no topic configs), so the topic is not compacted: readers keep the latest per key
   themselves, and a retention policy bounds it;
4. on the signal: a last heartbeat with status "stopped", `manager.shutdown()` (daemons stop,
   dependents first), `router.stop()` (consumers commit, spool drainer stopped with its records kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import brokers
from brokers.base import Broker
from brokers.errors import BrokerError
from coordination.daemon_manager import DaemonManager, get_daemon_manager
from coordination.daemon_types import DaemonManagerConfig, DaemonType
from coordination.daemons.health_server import HealthServerSettings
from coordination.event_router import UnifiedEventRouter, get_router
from coordination.plugins import PluginError, load_plugins, plugins_from_env

__all__ = ["NodeAgent", "NodeAgentError", "heartbeat_topic"]

log = logging.getLogger(__name__)


class NodeAgentError(Exception):
    """The agent could not start (a broker unreachable, an unknown profile, a daemon that failed)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # a broker could not be reached within the retry budget


def heartbeat_topic(namespace: str) -> str:
    return f"{namespace}.nodes"


class NodeAgent:
    def __init__(self, profile: str, *, heartbeat_interval_s: float = 5.0, shutdown_timeout_s: float = 20.0,
                 router: UnifiedEventRouter | None = None, manager: DaemonManager | None = None,
                 plugins: list[str] | None = None) -> None:
        self.profile = profile
        self.plugins = plugins_from_env() if plugins is None else plugins
        self.heartbeat_interval_s = heartbeat_interval_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.router = router or get_router()
        self.manager = manager or get_daemon_manager(DaemonManagerConfig.from_env())
        self.health_port: int | None = None
        self._stop = asyncio.Event()
        self._heartbeats: Broker | None = None

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
            beating = asyncio.create_task(self._beat(), name="node-heartbeat")
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
        c = self.router.config
        try:
            extra = load_plugins(self.plugins, self.manager)
        except PluginError as exc:
            raise NodeAgentError(str(exc)) from None
        try:
            await self.router.start()
        except BrokerError as exc:
            raise NodeAgentError(f"cannot start: {type(exc).__name__}: {exc}", unreachable=exc.retriable) from None
        results = await self.manager.start_all(self.profile)
        for daemon_type in (DaemonType.HEALTH_SERVER, *extra):
            if daemon_type not in results:
                results[daemon_type] = await self.manager.start(daemon_type)
        failed = [getattr(t, "name", str(t)) for t, ok in results.items() if not ok]
        if failed:
            raise NodeAgentError(f"daemons did not start: {', '.join(failed)}")
        self.health_port = await self._health_port()
        if c.kafka_url is not None and self.heartbeat_interval_s > 0:
            self._heartbeats = brokers.connect(c.kafka_url, retry_budget_s=c.publish_retry_budget_s,
                                               **c.kafka_options)
            try:
                await self._heartbeats.start()
                await self._heartbeats.ensure_topic(heartbeat_topic(c.namespace))
            except BrokerError as exc:
                raise NodeAgentError(f"cannot start the heartbeat: {exc}", unreachable=exc.retriable) from None

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

    def _ready_line(self) -> str:
        daemons = ", ".join(name for name, entry in self._daemon_states().items() if entry == "running")
        health = f"http://{_health_host()}:{self.health_port}/healthz" if self.health_port else "none"
        return (f"node {self.node_id} ready: profile {self.profile} (pid {os.getpid()}); daemons: {daemons}; "
                f"health: {health}")

    def _daemon_states(self) -> dict[str, str]:
        report = self.manager.status_report()["daemons"]
        return {name: entry["state"] for name, entry in report.items() if entry["state"] != "stopped"
                or name in {getattr(t, "value", t) for t in self.manager.profiles.get(self.profile, ())}}

    def heartbeat(self, status: str = "running") -> dict[str, Any]:
        return {"node_id": self.node_id, "profile": self.profile, "pid": os.getpid(), "health_port": self.health_port,
                "status": status, "daemons": self._daemon_states(), "timestamp": time.time(),
                "interval_s": self.heartbeat_interval_s}

    async def _send_heartbeat(self, status: str) -> None:
        if self._heartbeats is None:
            return
        value = json.dumps(self.heartbeat(status)).encode()
        await self._heartbeats.publish_raw(heartbeat_topic(self.router.config.namespace), value, key=self.node_id)

    async def _beat(self) -> None:
        while True:
            try:
                await self._send_heartbeat("running")
            except BrokerError as exc:  # a missed beat is not worth stopping the node for
                log.warning("heartbeat not sent: %s", exc)
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _shutdown(self) -> None:
        with contextlib.suppress(BrokerError, asyncio.TimeoutError):
            async with asyncio.timeout(5.0):
                await self._send_heartbeat("stopped")
        try:
            await self.manager.shutdown(timeout=self.shutdown_timeout_s, force=True)
        finally:
            await self.router.stop()
            if self._heartbeats is not None:
                await self._heartbeats.close()
                self._heartbeats = None


def _health_host() -> str:
    return HealthServerSettings.from_env().host
