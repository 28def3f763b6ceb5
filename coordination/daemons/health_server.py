"""HEALTH_SERVER: the node's probes and metrics over HTTP (aiohttp).

    GET /healthz   200 when manager.liveness_probe() else 503; {alive, node_id, timestamp}
    GET /readyz    200 when manager.readiness_probe() else 503; {ready, not_ready_reasons, node_id, timestamp}
    GET /status    200; manager.status_report() plus {"router": router.get_stats()} when a router is given
                   and {"heartbeat": ...} (the node agent's latest, coordination.node_heartbeat) when given
    GET /metrics   200; Prometheus text from a private registry read at scrape time (the families are
                   listed in coordination.metrics)
    anything else  404 (405 for another method), JSON {"error": ...}

Where it listens: `HealthServerSettings.from_env()` reads RINGRIFT_HEALTH_HOST (default 127.0.0.1)
and RINGRIFT_HEALTH_PORT (default 8790); explicit `host`/`port` arguments win, and port 0 binds an
ephemeral port (`server.port` tells which once `await server.started()` returned).

Registration:

    manager.register_factory(DaemonType.HEALTH_SERVER, health_server.factory(manager, router),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordination.coordination_bootstrap import get_bootstrap_status, is_coordination_ready
from coordination.metrics import HeartbeatSource, node_registry
from coordination.protocols import HealthCheckResult

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "HealthServer", "HealthServerSettings", "factory"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8790


@dataclass(frozen=True)
class HealthServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthServerSettings:
        env = os.environ if environ is None else environ
        port = env.get("RINGRIFT_HEALTH_PORT", "").strip()
        try:
            number = int(port) if port else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"RINGRIFT_HEALTH_PORT={port!r} is not a port number") from None
        return cls(host=env.get("RINGRIFT_HEALTH_HOST", "").strip() or DEFAULT_HOST, port=number)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(dict(body), status=status, dumps=_dumps)


class HealthServer:
    """The HTTP server as a daemon: `run()` serves until `stop()`."""

    def __init__(self, manager: Any, router: Any = None, *, host: str | None = None, port: int | None = None,
                 node_id: str | None = None, settings: HealthServerSettings | None = None,
                 heartbeat: HeartbeatSource | None = None) -> None:
        s = settings or HealthServerSettings.from_env()
        self._manager = manager
        self._router = router
        self.host = host if host is not None else s.host
        self._requested_port = port if port is not None else s.port
        self.node_id = node_id or getattr(getattr(router, "config", None), "node_id", None) or socket.gethostname()
        self.port: int | None = None
        self.requests = 0
        self._heartbeat = heartbeat
        self._registry = node_registry(manager, router, heartbeat=heartbeat)
        self._stopped = asyncio.Event()
        self._listening = asyncio.Event()

    # -- the daemon contract ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._stopped.clear()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, reuse_address=True)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._listening.set()
            await self._stopped.wait()
        finally:
            self._listening.clear()
            self.port = None
            await runner.cleanup()

    async def stop(self) -> None:
        self._stopped.set()

    async def started(self, timeout: float = 5.0) -> int:
        """Wait until the server listens; its port."""
        await asyncio.wait_for(self._listening.wait(), timeout)
        assert self.port is not None
        return self.port

    def health_check(self) -> HealthCheckResult:
        details = {"host": self.host, "port": self.port, "requests": self.requests}
        if self.port is None:
            return HealthCheckResult.degraded("not listening yet", **details)
        return HealthCheckResult.healthy(f"listening on {self.host}:{self.port}", **details)

    # -- HTTP ------------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_as_json])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _errors_as_json(self, request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        self.requests += 1
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json(exc.status, {"error": exc.reason, "path": request.path})

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = bool(self._manager.liveness_probe())
        return _json(200 if alive else 503, {"alive": alive, "node_id": self.node_id, "timestamp": time.time()})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = bool(self._manager.readiness_probe())
        reasons = [] if ready else list(self._manager.not_ready_reasons())
        return _json(200 if ready else 503, {"ready": ready, "not_ready_reasons": reasons, "node_id": self.node_id,
                                             "timestamp": time.time()})

    async def _status(self, request: web.Request) -> web.Response:
        body = {**self._manager.status_report(), "node_id": self.node_id, "timestamp": time.time()}
        if self._router is not None:
            body["router"] = self._router.get_stats()
        if self._heartbeat is not None:
            body["heartbeat"] = self._heartbeat()
        coordination = get_bootstrap_status()
        if coordination.get("initialized"):
            body["coordination"] = {key: coordination.get(key) for key in (
                "initialized_count", "subscribed_count", "total_count", "errors")}
            body["coordination"]["ready"] = is_coordination_ready()
        return _json(200, body)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def factory(manager: Any, router: Any = None, **options: Any) -> Callable[[], HealthServer]:
    """The HEALTH_SERVER factory: a new server per (re)start; `options` go to `HealthServer`."""
    return lambda: HealthServer(manager, router, **options)
