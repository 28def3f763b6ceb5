"""EPHEMERAL_SYNC: an ephemeral host pushes its new data out quickly and often, since it may vanish.

Every `ephemeral_interval_s` (5 s) it scans the node's data directory and, when files are new or
changed since its last confirmed push, asks the durable (non-ephemeral) live sync peers to pull them
from this node: a facade sync with `prefer_ephemeral` (the EPHEMERAL backend), those paths, and
confirmation within `confirm_timeout_s` (write-through: a file counts as pushed once every durable
peer confirmed). A push that is not confirmed is retried on the next tick and counts as a tick error
(health). Without a durable peer there is nothing to push to, and the tick does nothing.

What it remembers (path -> SHA-256 pushed) is only an optimisation: after a restart it asks again,
and the durable peers, already holding the files, transfer nothing.

Registration (coordination.daemons.builtin):

    manager.register_factory(DaemonType.EPHEMERAL_SYNC, ephemeral_sync.factory(manager, router),
                             depends_on=[DaemonType.EVENT_ROUTER, DaemonType.DATA_SERVER])
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from coordination.daemons.auto_sync import LocateServer, data_server_of
from coordination.daemons.periodic import PeriodicDaemon
from coordination.event_router import UnifiedEventRouter
from coordination.sync_facade import SyncFacade
from coordination.sync_manifest import ManifestBuilder
from coordination.sync_request import SyncRequest
from coordination.sync_settings import SyncSettings

__all__ = ["MAX_PATHS_PER_PUSH", "EphemeralSyncDaemon", "factory"]

log = logging.getLogger(__name__)

MAX_PATHS_PER_PUSH = 500  # keeps one command well below the record size limit; the rest go next tick


class PushNotConfirmed(Exception):
    """Some durable peer did not confirm a push (the message lists them)."""


class EphemeralSyncDaemon(PeriodicDaemon):
    def __init__(self, router: UnifiedEventRouter, settings: SyncSettings | None = None, *,
                 data_server: LocateServer | None = None) -> None:
        self.settings = settings or SyncSettings.from_env()
        super().__init__(interval_s=self.settings.ephemeral_interval_s)
        self.facade = SyncFacade(router, self.settings)
        self._locate = data_server
        self._builder: ManifestBuilder | None = None
        self.pushed: dict[str, str] = {}  # path -> SHA-256 every durable peer confirmed

    async def run(self) -> None:
        server = await self._locate() if self._locate is not None else None
        self._builder = server.builder if server is not None else ManifestBuilder(self.settings.data_dir,
                                                                                  self.facade.node_id)
        try:
            await super().run()
        finally:
            await self.facade.close()

    async def tick(self) -> None:
        assert self._builder is not None
        manifest = await self._builder.scan()
        fresh = {e.path: e.sha256 for e in manifest.files if self.pushed.get(e.path) != e.sha256}
        if not fresh:
            return
        paths = sorted(fresh)[:MAX_PATHS_PER_PUSH]
        response = await self.facade.sync(SyncRequest(data_type="all", paths=paths, prefer_ephemeral=True,
                                                      require_confirmation=True,
                                                      timeout_seconds=self.settings.confirm_timeout_s))
        if not response.details.get("targets"):
            log.debug("no durable sync peer to push %d file(s) to", len(paths))
            return
        if not response.success:
            raise PushNotConfirmed(f"push of {len(paths)} file(s) not confirmed: {'; '.join(response.errors)}")
        self.pushed.update({path: fresh[path] for path in paths})


def factory(manager: Any, router: Callable[[], UnifiedEventRouter],
            settings: SyncSettings | None = None) -> Callable[[], EphemeralSyncDaemon]:
    """The EPHEMERAL_SYNC factory: the process's router (resolved at start) and `manager`'s DATA_SERVER."""
    return lambda: EphemeralSyncDaemon(router(), settings, data_server=data_server_of(manager))
