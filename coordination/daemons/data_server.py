"""DATA_SERVER: the node's data directory served to its peers (coordination/sync_server.DataServer).

Settings (`DataServerSettings.from_env()`; explicit arguments win):

    RINGRIFT_DATA_DIR          ./data       holds games/, models/, npz/ (created when missing)
    RINGRIFT_CLUSTER_SECRET    (required)   the HMAC key every node shares; empty -> the daemon fails
                                            at once with a ValueError saying so
    RINGRIFT_DATA_HOST         127.0.0.1    listen address (0.0.0.0 to serve other machines)
    RINGRIFT_DATA_PORT         8791         0 binds an ephemeral port
    RINGRIFT_NODE_ID           host name    the node named in the manifest

Health: degraded until it listens; then healthy with the server's counters (requests, files and
bytes served, refused signatures and paths).

Registration:

    manager.register_factory(DaemonType.DATA_SERVER, data_server.factory(),
                             depends_on=[DaemonType.EVENT_ROUTER])
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coordination.protocols import HealthCheckResult
from coordination.sync_server import DataServer

__all__ = ["DEFAULT_DATA_DIR", "DEFAULT_HOST", "DEFAULT_PORT", "DataServerDaemon", "DataServerSettings", "factory"]

DEFAULT_DATA_DIR = "data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8791


@dataclass(frozen=True)
class DataServerSettings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    secret: str = field(default="", repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    node_id: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"RINGRIFT_DATA_PORT={self.port} is not a port number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DataServerSettings:
        env = os.environ if environ is None else environ
        port = env.get("RINGRIFT_DATA_PORT", "").strip()
        try:
            number = int(port) if port else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"RINGRIFT_DATA_PORT={port!r} is not a port number") from None
        return cls(data_dir=Path(env.get("RINGRIFT_DATA_DIR", "").strip() or DEFAULT_DATA_DIR),
                   secret=env.get("RINGRIFT_CLUSTER_SECRET", ""),
                   host=env.get("RINGRIFT_DATA_HOST", "").strip() or DEFAULT_HOST, port=number,
                   node_id=env.get("RINGRIFT_NODE_ID", "").strip() or socket.gethostname())


class DataServerDaemon:
    """The data server as a daemon: `run()` serves until `stop()`."""

    def __init__(self, settings: DataServerSettings | None = None, **overrides: Any) -> None:
        self.settings = replace(settings or DataServerSettings.from_env(), **overrides)
        s = self.settings
        self.server = DataServer(s.data_dir, s.secret, s.node_id, host=s.host, port=s.port)
        self._stopped = asyncio.Event()
        self._listening = asyncio.Event()

    async def run(self) -> None:
        self._stopped.clear()
        await self.server.start()
        try:
            self._listening.set()
            await self._stopped.wait()
        finally:
            self._listening.clear()
            await self.server.stop()

    async def stop(self) -> None:
        self._stopped.set()

    async def started(self, timeout: float = 5.0) -> int:
        """Wait until the server listens; its port."""
        await asyncio.wait_for(self._listening.wait(), timeout)
        assert self.server.port is not None
        return self.server.port

    def health_check(self) -> HealthCheckResult:
        details = {"data_dir": str(self.settings.data_dir), "host": self.settings.host, "port": self.server.port,
                   **self.server.stats}
        if self.server.port is None:
            return HealthCheckResult.degraded("not listening yet", **details)
        return HealthCheckResult.healthy(f"serving {self.settings.data_dir} on {self.server.base_url}", **details)


def factory(**options: Any) -> Callable[[], DataServerDaemon]:
    """The DATA_SERVER factory: a new daemon per (re)start, settings read from the environment then;
    `options` override settings fields (data_dir, secret, host, port, node_id)."""
    return lambda: DataServerDaemon(**options)
