"""What MODEL_DISTRIBUTION and NPZ_DISTRIBUTION share: an event names a file, nodes get it.

`DistributionDaemon` is a cluster-wide `ConsumerDaemon` (one process handles each event) holding a
`SyncFacade` on its own router; `distribute(path, data_type, targets)` asks the targets (None: every
live sync peer) to pull exactly that file, at high priority, and waits for their confirmation until
`distribution_timeout_s`. `data_path` turns the path an event carries (absolute, relative, or a bare
name) into the data-directory path the data plane knows ("models/<name>").
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from coordination.config import RouterConfig
from coordination.daemons.base import ConsumerDaemon
from coordination.sync_facade import SyncFacade
from coordination.sync_manifest import is_syncable
from coordination.sync_request import SyncRequest, SyncResponse
from coordination.sync_settings import SyncSettings

__all__ = ["DistributionDaemon", "data_path"]


def data_path(data_type: str, value: str) -> str:
    """`data_type`/... for a file named by an event: from its last `<data_type>/` folder on, else
    `<data_type>/<file name>`. ValueError when that is no syncable path."""
    parts = PureWindowsPath(value).parts if "\\" in value else PurePosixPath(value).parts
    if value.endswith(("/", "\\")):  # a folder names no file
        parts = ()
    if data_type in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index(data_type)
        relative = "/".join(parts[at:])
    else:
        relative = f"{data_type}/{parts[-1]}" if parts else ""
    if not is_syncable(relative):
        raise ValueError(f"{value!r} does not name a file the data plane syncs under {data_type}/")
    return relative


class DistributionDaemon(ConsumerDaemon):
    def __init__(self, config: RouterConfig | None = None, settings: SyncSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or SyncSettings.from_env()
        self.facade = SyncFacade(self.router, self.settings)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.facade.close()

    async def distribute(self, path: str, data_type: str, targets: list[str] | None) -> SyncResponse:
        return await self.facade.sync(SyncRequest(data_type=data_type, paths=[path], targets=targets, priority="high",
                                                  require_confirmation=True,
                                                  timeout_seconds=self.settings.distribution_timeout_s))
