"""AUTO_SYNC: a node's sync agent. It carries out the sync commands addressed to it, pulls by itself
what its peers hold and it lacks (gossip), and announces what it holds.

* Commands: `SYNC_REQUEST` events (coordination.sync_commands) are read in the consumer group
  `daemon.auto_sync.<node_id>` (`group_per_node`): every node reads every command and acts on those
  naming it, once per request id (the requester re-sends to nodes that have not answered). Each runs
  as a task: plan against the live peers' manifests, answer DATA_SYNC_STARTED, pull, answer
  DATA_SYNC_COMPLETED or DATA_SYNC_FAILED. A task still running when the daemon stops answers FAILED.
* Gossip: every `auto_sync_interval_s`, and soon (at least `min_sync_interval_s` after the previous
  cycle) after NEW_GAMES_AVAILABLE or SELFPLAY_COMPLETE from another node, it reads the peers'
  records and pulls, at low priority, the `auto_sync_data_types` files of peers whose manifest digest
  changed since it last pulled from them (all live peers after an event). A cycle that brought files
  publishes DATA_SYNC_COMPLETED with an empty request id.
* Announcing: every `scan_interval_s` it scans its data directory (with the DATA_SERVER's manifest
  builder, sharing its hash cache) and announces its record on `<ns>.sync.manifests` when the digest
  changed or `announce_interval_s` passed; "stopped" when it stops.

All transfers of the node go through one `SyncExecutor`, so two requests (or a request and the
gossip) wanting the same file transfer it once.

Registration (coordination.daemons.builtin):

    manager.register_factory(DaemonType.AUTO_SYNC, auto_sync.factory(manager, router_resolver),
                             depends_on=[DaemonType.EVENT_ROUTER, DaemonType.DATA_SERVER])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import brokers
from brokers.base import Broker
from brokers.errors import BrokerError
from coordination.config import RouterConfig
from coordination.daemon_types import DaemonType
from coordination.daemons.base import ConsumerDaemon
from coordination.protocols import HealthCheckResult
from coordination.sync_commands import (
    COMMAND_TYPE,
    COMPLETED,
    FAILED,
    STARTED,
    SyncCommand,
    completed_payload,
    failed_payload,
    started_payload,
)
from coordination.sync_executor import PullOutcome, SyncExecutor
from coordination.sync_peers import PeerDirectory, PeerRecord, manifests_topic
from coordination.sync_planner import SyncFilter
from coordination.sync_server import DataServer
from coordination.sync_settings import SyncSettings
from coordination.sync_transfer import DataPlaneError
from schemas.envelope import RouterEvent

__all__ = ["AutoSyncDaemon", "data_server_of", "factory", "open_sync_broker"]

log = logging.getLogger(__name__)

_TRIGGERS = ("NEW_GAMES_AVAILABLE", "SELFPLAY_COMPLETE")
LocateServer = Callable[[], Awaitable[DataServer | None]]


def data_server_of(manager: Any, timeout_s: float = 10.0) -> LocateServer:
    """A locator of the DATA_SERVER running under `manager` (None when it is not registered)."""

    async def locate() -> DataServer | None:
        async with asyncio.timeout(timeout_s):
            while True:
                info = manager.get_daemon_info(DaemonType.DATA_SERVER)
                if info is None:
                    return None
                if info.instance is not None:
                    await info.instance.started(timeout_s)
                    return info.instance.server  # type: ignore[no-any-return]
                await asyncio.sleep(0.05)

    return locate


def open_sync_broker(config: RouterConfig) -> Broker:
    """A broker (not started) for the sync records: Kafka, or the node's Redis without Kafka."""
    url, options = (config.kafka_url, config.kafka_options) if config.kafka_url else (config.redis_url,
                                                                                       config.redis_options)
    return brokers.connect(url, **{"retry_budget_s": config.publish_retry_budget_s, **options})


class AutoSyncDaemon(ConsumerDaemon):
    daemon_type = DaemonType.AUTO_SYNC
    subscriptions = (COMMAND_TYPE, *_TRIGGERS)
    buses = ("cross",)
    group_per_node = True

    def __init__(self, config: RouterConfig | None = None, settings: SyncSettings | None = None, *,
                 data_server: LocateServer | None = None) -> None:
        super().__init__(config)
        self.settings = settings or SyncSettings.from_env()
        if not self.settings.secret:
            raise ValueError("AUTO_SYNC pulls over the signed data plane: set RINGRIFT_CLUSTER_SECRET")
        self.node_id = self.config.node_id
        self._locate = data_server
        self.data_url: str | None = None
        self.executor: SyncExecutor | None = None
        self.directory: PeerDirectory | None = None
        self._broker: Broker | None = None
        self._wake = asyncio.Event()
        self._seen: dict[str, float] = {}  # request id -> its deadline
        self._work: dict[str, asyncio.Task[None]] = {}  # request id -> the task carrying it out
        self._digests: dict[str, str] = {}  # peer -> the digest this node last pulled against
        self.counts: Counter[str] = Counter()

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        server = await self._locate() if self._locate is not None else None
        self.data_url = server.base_url if server is not None else None
        s = self.settings
        self.executor = SyncExecutor(s.data_dir, s.secret, self.node_id, max_concurrent=s.max_concurrent,
                                     builder=server.builder if server is not None else None)
        self._broker = open_sync_broker(self.config)
        loops: list[asyncio.Task[None]] = []
        try:
            await self._broker.start()
            await self.router.start()  # reading commands before announcing itself (super().run() starts it too)
            self.directory = PeerDirectory(self._broker, manifests_topic(self.config.namespace),
                                           horizon_s=max(600.0, 4 * s.announce_interval_s))
            loops = [asyncio.create_task(self._announce_loop(), name="auto-sync-announce"),
                     asyncio.create_task(self._gossip_loop(), name="auto-sync-gossip")]
            await super().run()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.router.stop()  # idempotent: super().run() stopped it unless it never ran
            await self._announce_stopped()
            await self.executor.close()
            await self._broker.close()

    async def stop(self) -> None:
        """Requests still running answer FAILED (the router is still up), then run() returns."""
        work = list(self._work.values())
        for task in work:
            task.cancel()
        if work:
            await asyncio.wait(work, timeout=10.0)
        await super().stop()

    async def _announce_stopped(self) -> None:
        if self.directory is None or self.executor is None:
            return
        with contextlib.suppress(BrokerError, OSError, asyncio.TimeoutError):
            async with asyncio.timeout(5.0):
                manifest = await self.executor.local_manifest()
                record = PeerRecord.for_manifest(manifest, self.data_url, ephemeral=self.settings.ephemeral,
                                                 announce_interval_s=self.settings.announce_interval_s)
                record.status = "stopped"
                await self.directory.announce(record)

    # -- events ------------------------------------------------------------------------------------------

    async def handle(self, event: RouterEvent) -> None:
        if event.event_type != COMMAND_TYPE:
            if str(event.payload.get("host") or event.payload.get("node_id") or "") != self.node_id:
                self._wake.set()
            return
        command = SyncCommand.from_event(event)  # malformed: raised, retried, then a dead letter
        now = time.time()
        if not command.addressed_to(self.node_id) or command.request_id in self._seen:
            return
        if command.deadline < now:
            log.info("ignoring sync request %s: its deadline passed %.0f s ago", command.request_id,
                     now - command.deadline)
            return
        self._seen = {rid: deadline for rid, deadline in self._seen.items() if deadline >= now}
        self._seen[command.request_id] = command.deadline
        task = asyncio.create_task(self._carry_out(command), name=f"sync {command.request_id}")
        self._work[command.request_id] = task
        task.add_done_callback(lambda _t, rid=command.request_id: self._work.pop(rid, None))

    async def _answer(self, event_type: str, command: SyncCommand, payload: dict[str, Any]) -> None:
        await self.router.publish(event_type, payload, source=f"auto_sync:{self.node_id}",
                                  correlation_id=command.request_id, key=command.request_id)

    async def _live_peers(self) -> dict[str, PeerRecord]:
        assert self.directory is not None
        now = time.time()
        return {n: r for n, r in (await self.directory.refresh()).items() if n != self.node_id and r.can_serve(now)}

    async def _carry_out(self, command: SyncCommand) -> None:
        assert self.executor is not None
        self.counts["commands"] += 1
        started = time.monotonic()
        outcome = PullOutcome()
        try:
            peers = await self._live_peers()
            wanted = [s for s in command.sources or () if s != self.node_id]
            plan = await self.executor.plan(command.sync_filter(), peers, sources=command.sources,
                                            exclude=command.exclude, unreachable=outcome.unreachable)
            if wanted and all(s not in peers or s in outcome.unreachable for s in wanted):
                why = "; ".join(f"{s}: {outcome.unreachable.get(s, 'no live sync record with a data URL')}"
                                for s in wanted)
                raise DataPlaneError("sources unavailable", why)
            await self._answer(STARTED, command, started_payload(
                command, self.node_id, len(plan), sum(p.entry.size for p in plan), sorted({p.source for p in plan})))
            await self.executor.pull(plan, outcome, bandwidth_limit_mbps=command.bandwidth_limit_mbps,
                                     priority=command.priority)
            outcome.duration_s = time.monotonic() - started
            self._count(outcome)
            if outcome.failed:
                error = "; ".join(f"{path}: {reason}" for path, reason in outcome.failed.items())
                await self._answer(FAILED, command, failed_payload(command, self.node_id, error, outcome))
            else:
                await self._answer(COMPLETED, command, completed_payload(command, self.node_id, outcome))
        except asyncio.CancelledError:
            outcome.duration_s = time.monotonic() - started
            with contextlib.suppress(BrokerError, asyncio.TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._answer(FAILED, command, failed_payload(command, self.node_id, "the node is stopping",
                                                                       outcome))
            raise
        except (BrokerError, DataPlaneError, OSError) as exc:
            outcome.duration_s = time.monotonic() - started
            self.counts["command_errors"] += 1
            log.warning("sync request %s failed: %s", command.request_id, exc)
            with contextlib.suppress(BrokerError):
                await self._answer(FAILED, command, failed_payload(command, self.node_id, str(exc), outcome))

    def _count(self, outcome: PullOutcome) -> None:
        self.counts["files_pulled"] += len(outcome.files)
        self.counts["bytes_pulled"] += outcome.bytes_transferred
        self.counts["files_shared"] += len(outcome.shared)
        self.counts["files_failed"] += len(outcome.failed)

    # -- background loops ---------------------------------------------------------------------------------

    async def _announce_loop(self) -> None:
        assert self.executor is not None and self.directory is not None
        s = self.settings
        digest, announced_at = "", 0.0
        while True:
            try:
                manifest = await self.executor.local_manifest()
                if manifest.digest != digest or time.monotonic() - announced_at >= s.announce_interval_s:
                    await self.directory.announce(PeerRecord.for_manifest(
                        manifest, self.data_url, ephemeral=s.ephemeral, announce_interval_s=s.announce_interval_s,
                        active_transfers=self.executor.active_transfers))
                    digest, announced_at = manifest.digest, time.monotonic()
            except (BrokerError, OSError) as exc:
                self.counts["announce_errors"] += 1
                log.warning("sync record not announced: %s", exc)
            await asyncio.sleep(s.scan_interval_s)

    async def _gossip_loop(self) -> None:
        s = self.settings
        last = float("-inf")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=s.auto_sync_interval_s)
            await asyncio.sleep(max(0.0, last + s.min_sync_interval_s - time.monotonic()))
            triggered = self._wake.is_set()
            self._wake.clear()
            last = time.monotonic()
            try:
                await self._gossip(every_peer=triggered)
            except (BrokerError, DataPlaneError, OSError) as exc:
                self.counts["gossip_errors"] += 1
                log.warning("gossip cycle failed: %s", exc)

    async def _gossip(self, *, every_peer: bool) -> None:
        assert self.executor is not None
        self.counts["gossip_cycles"] += 1
        started = time.monotonic()
        peers = await self._live_peers()
        changed = {n: r for n, r in peers.items() if every_peer or self._digests.get(n) != r.digest}
        if not changed:
            return
        outcome = PullOutcome()
        plan = await self.executor.plan(SyncFilter.of(self.settings.auto_sync_data_types), changed,
                                        unreachable=outcome.unreachable)
        await self.executor.pull(plan, outcome, priority="low")
        outcome.duration_s = time.monotonic() - started
        self._count(outcome)
        if outcome.ok:
            self._digests.update({n: r.digest for n, r in changed.items() if n not in outcome.unreachable})
        if outcome.files:
            await self.router.publish(COMPLETED, completed_payload(None, self.node_id, outcome),
                                      source=f"auto_sync:{self.node_id}")

    # -- health ----------------------------------------------------------------------------------------

    def health_check(self) -> HealthCheckResult:
        result = super().health_check()
        return result.with_details(data_url=self.data_url, running_requests=len(self._work),
                                   active_transfers=self.executor.active_transfers if self.executor else 0,
                                   **dict(self.counts))


def factory(manager: Any, router: Callable[[], Any],
            settings: SyncSettings | None = None) -> Callable[[], AutoSyncDaemon]:
    """The AUTO_SYNC factory: a new daemon per (re)start on the node router's configuration (resolved
    then), serving with `manager`'s DATA_SERVER."""
    return lambda: AutoSyncDaemon(router().config, settings, data_server=data_server_of(manager))
