"""The one entry point for moving games, models and training files between nodes (API reference, section 3).

    response = await sync("games", targets=["node-b", "node-c"], require_confirmation=True)
    response.success, response.nodes_synced, response.bytes_transferred, response.errors, response.details

`SyncFacade.sync(request)` picks a backend in the reference's order (`sync_request.select_backend`),
then, for every backend but DISTRIBUTED, publishes ONE `SYNC_REQUEST` command naming its targets on
the cross-process bus (coordination.sync_commands); each target's AUTO_SYNC daemon pulls what it
lacks over the data plane and answers DATA_SYNC_STARTED, then DATA_SYNC_COMPLETED or _FAILED. What
the backends decide:

    AUTO_SYNC     targets: the named ones, else every live sync peer; sources: any holder
    CLUSTER_SYNC  the same, at high/critical priority (targets run it ahead of queued transfers)
    ROUTER        the named targets; each picks its sources by freshness and load
    EPHEMERAL     durable (non-ephemeral) live peers pull from THIS node: its data gets out fast
    DISTRIBUTED   no command: this process pulls into its own data directory (RINGRIFT_DATA_DIR)

Targets and sources never include `exclude_nodes`. A target whose sync record says it stopped is an
error at once; with `require_confirmation` the facade waits for every other target's answer until
`timeout_seconds` (re-sending the command every few seconds to targets that have not answered at
all: a node whose consumer group is still joining misses a command sent before it joined), and a
target that never answered is an error for that node. Without confirmation it returns once the
broker acknowledged the command (`nodes_synced` 0, each node "requested"). `bandwidth_limit_mbps`
applies to each target's transfers for this request. The original walked a fallback chain of
backends; here every backend but DISTRIBUTED travels the same way, so a failure is reported per node
rather than retried through another backend.

`trigger_priority_sync` pulls from one named source now, at critical priority, into this node (or
the given targets). Stats and health: coordination.sync_stats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

import brokers
from brokers.base import Broker
from brokers.errors import BrokerError
from coordination.event_router import UnifiedEventRouter, get_router
from coordination.protocols import HealthCheckResult
from coordination.sync_commands import COMMAND_TYPE, AnswerWatcher, NodeProgress, SyncCommand, command_routes
from coordination.sync_executor import SyncExecutor
from coordination.sync_manifest import parse_config_key
from coordination.sync_peers import PeerDirectory, PeerRecord, manifests_topic
from coordination.sync_planner import SyncFilter
from coordination.sync_request import SyncBackend, SyncRequest, SyncRequestError, SyncResponse, select_backend
from coordination.sync_settings import SyncSettings
from coordination.sync_stats import SyncStats
from coordination.sync_transfer import DataPlaneError

__all__ = ["SyncBackend", "SyncFacade", "SyncRequest", "SyncRequestError", "SyncResponse", "get_sync_facade",
           "reset_sync_facade", "sync"]

ProgressCallback = Callable[[NodeProgress], None]


class SyncFacade:
    def __init__(self, router: UnifiedEventRouter | None = None, settings: SyncSettings | None = None, *,
                 poll_interval_s: float = 0.3, resend_after_s: float = 3.0) -> None:
        self._router = router
        self.settings = settings or SyncSettings.from_env()
        self.poll_interval_s = poll_interval_s
        self.resend_after_s = resend_after_s
        self.stats = SyncStats(backends_loaded=len(SyncBackend) if self.settings.secret else len(SyncBackend) - 1)
        self._reader: Broker | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._executor: SyncExecutor | None = None
        self._directory: PeerDirectory | None = None

    @property
    def router(self) -> UnifiedEventRouter:
        if self._router is None:
            self._router = get_router()
        return self._router

    @property
    def node_id(self) -> str:
        return self.router.config.node_id

    # -- the brokers read outside any group --------------------------------------------------------------

    async def reader(self) -> Broker:
        """A started broker for group-less reads (Kafka, or the node's Redis without it), on this loop."""
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader_loop is loop:
            return self._reader
        c = self.router.config
        url, options = (c.kafka_url, c.kafka_options) if c.kafka_url is not None else (c.redis_url, c.redis_options)
        reader = brokers.connect(url, **{"retry_budget_s": c.publish_retry_budget_s, **options})
        await reader.start()
        if self._reader is not None and self._reader_loop is loop:  # a concurrent call was quicker
            await reader.close()
            return self._reader
        self._reader, self._reader_loop = reader, loop
        return reader

    def _answer_topic(self) -> str:
        c = self.router.config
        return c.cross_topic if c.kafka_enabled else c.data_topic

    async def peers(self) -> dict[str, PeerRecord]:
        """The sync peers' newest records (coordination.sync_peers)."""
        broker = await self.reader()
        if self._directory is None or self._directory.broker is not broker:
            self._directory = PeerDirectory(broker, manifests_topic(self.router.config.namespace))
        return await self._directory.refresh()

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and self._reader_loop is asyncio.get_running_loop():
            await reader.close()
        if self._executor is not None:
            await self._executor.close()
            self._executor = None

    # -- sync --------------------------------------------------------------------------------------------

    async def sync(self, request: SyncRequest | Mapping[str, Any] | str = "games", *,
                   backend: SyncBackend | None = None, on_update: ProgressCallback | None = None,
                   **overrides: Any) -> SyncResponse:
        """Carry out `request` (a SyncRequest, a dict of its fields or a data type, plus field overrides).
        `backend` forces one (e.g. DISTRIBUTED); `on_update(progress)` sees each node's progress."""
        req = SyncRequest.coerce(request, **overrides)
        chosen = backend or select_backend(req, ephemeral_node=self.settings.ephemeral)
        started = time.monotonic()
        try:
            if chosen is SyncBackend.DISTRIBUTED:
                response = await self._pull_here(req)
            else:
                response = await self._command(req, chosen, on_update)
        except (BrokerError, DataPlaneError, OSError, ValueError) as exc:
            response = SyncResponse(False, chosen, errors=[f"{chosen.value}: {type(exc).__name__}: {exc}"],
                                    details={"request_id": req.request_id})
        response.duration_seconds = time.monotonic() - started
        self.stats.record(response)
        return response

    def _targets(self, req: SyncRequest, backend: SyncBackend, peers: Mapping[str, PeerRecord]) -> list[str]:
        exclude = set(req.exclude_nodes)
        named = req.explicit_targets
        if named is not None:
            return [t for t in dict.fromkeys(named) if t not in exclude]
        now = time.time()
        live = [n for n, r in sorted(peers.items()) if r.is_live(now) and n not in exclude]
        if backend is SyncBackend.EPHEMERAL:
            live = [n for n in live if not peers[n].ephemeral and n != self.node_id]
        return live

    async def _command(self, req: SyncRequest, backend: SyncBackend,
                       on_update: ProgressCallback | None) -> SyncResponse:
        peers = await self.peers()
        targets = self._targets(req, backend, peers)
        sources = req.sources
        if backend is SyncBackend.EPHEMERAL and sources is None:
            sources = [self.node_id]
        details: dict[str, Any] = {"request_id": req.request_id, "targets": targets, "sources": sources,
                                   "excluded": sorted(req.exclude_nodes), "confirmed": req.require_confirmation}
        if not targets:
            known = ", ".join(sorted(peers)) or "none"
            return SyncResponse(False, backend, errors=[f"no eligible nodes to sync (sync peers seen: {known})"],
                                details={**details, "nodes": {}})
        progress = {t: NodeProgress(t) for t in targets}
        for t in targets:
            record = peers.get(t)
            if record is not None and record.status == "stopped":
                progress[t].status, progress[t].error = "down", "the node is down (its sync record says stopped)"
        pending = [t for t in targets if not progress[t].finished]
        command = SyncCommand(request_id=req.request_id, targets=pending, data_types=list(req.data_types),
                              deadline=time.time() + req.timeout_seconds, board_type=req.board_type,
                              num_players=req.num_players, paths=req.paths, sources=sources,
                              exclude=sorted(req.exclude_nodes), priority=req.priority,
                              bandwidth_limit_mbps=req.bandwidth_limit_mbps, requester=self.node_id,
                              backend=backend.value)
        if on_update is not None:
            for item in progress.values():
                on_update(item)
        if pending:
            sent_at = time.time()
            await self._send(command)
            if req.require_confirmation:
                await self._await_answers(command, progress, peers, sent_at, req.timeout_seconds, on_update)
        return _response(backend, progress, details, confirmed=req.require_confirmation)

    async def _send(self, command: SyncCommand) -> None:
        await self.router.publish(COMMAND_TYPE, command.payload(), source=f"sync_facade:{self.node_id}",
                                  correlation_id=command.request_id, key=command.request_id,
                                  **command_routes(self.router.config))

    async def _await_answers(self, command: SyncCommand, progress: dict[str, NodeProgress],
                             peers: Mapping[str, PeerRecord], sent_at: float, timeout_s: float,
                             on_update: ProgressCallback | None) -> None:
        watcher = AnswerWatcher(await self.reader(), self._answer_topic(), command.request_id, since=sent_at)
        deadline = time.monotonic() + timeout_s
        last_send = time.monotonic()
        while True:
            for event in await watcher.poll():
                item = progress.get(str(event.payload.get("node_id", "")))
                if item is not None:
                    item.apply(event)
                    if on_update is not None:
                        on_update(item)
            if all(p.finished for p in progress.values()) or time.monotonic() >= deadline:
                break
            silent = [t for t, p in progress.items() if p.status == "requested"]
            if silent and time.monotonic() - last_send >= self.resend_after_s:
                await self._send(msgspec.structs.replace(command, targets=silent))
                last_send = time.monotonic()
            await asyncio.sleep(max(0.0, min(self.poll_interval_s, deadline - time.monotonic())))
        for node, item in progress.items():
            if not item.finished:
                record = peers.get(node)
                hint = " (not a known sync peer)" if record is None else "" if record.is_live() else \
                    f" (its last sync record is {time.time() - record.updated_at:.0f} s old)"
                what = "no answer" if item.status == "requested" else "started but did not finish"
                item.status, item.error = "timeout", f"{what} within {timeout_s:g} s{hint}"
                if on_update is not None:
                    on_update(item)

    async def _pull_here(self, req: SyncRequest) -> SyncResponse:
        """DISTRIBUTED: this process pulls into its own data directory."""
        if not self.settings.secret:
            raise ValueError("the DISTRIBUTED backend pulls over the data plane: set RINGRIFT_CLUSTER_SECRET")
        if self._executor is None:
            s = self.settings
            self._executor = SyncExecutor(s.data_dir, s.secret, self.node_id, max_concurrent=s.max_concurrent)
        peers = await self.peers()
        now = time.time()
        live = {n: r for n, r in peers.items() if r.can_serve(now) and n not in req.exclude_nodes}
        flt = SyncFilter.of(req.data_types, board_type=req.board_type, num_players=req.num_players, paths=req.paths)
        outcome = await self._executor.sync(flt, live, sources=req.sources, exclude=req.exclude_nodes,
                                            bandwidth_limit_mbps=req.bandwidth_limit_mbps, priority=req.priority)
        me = NodeProgress(self.node_id, "completed" if outcome.ok else "failed",
                          planned_files=len(outcome.files) + len(outcome.shared) + len(outcome.failed),
                          planned_bytes=outcome.planned_bytes, files=len(outcome.files),
                          shared_files=len(outcome.shared), bytes_transferred=outcome.bytes_transferred,
                          duration_seconds=round(outcome.duration_s, 3),
                          error="; ".join(f"{p}: {r}" for p, r in outcome.failed.items()))
        details = {"request_id": req.request_id, "targets": [self.node_id], "sources": req.sources,
                   "unreachable_peers": outcome.unreachable, "confirmed": True}
        return _response(SyncBackend.DISTRIBUTED, {self.node_id: me}, details, confirmed=True)

    async def trigger_priority_sync(self, reason: str = "priority_sync", source_node: str | None = None,
                                    config_key: str | None = None, data_type: str = "games", *,
                                    targets: list[str] | None = None,
                                    timeout_seconds: float = 300.0) -> SyncResponse:
        """Pull `data_type` (of `config_key`, e.g. "hex8_2p") from `source_node` now, at critical priority,
        into `targets` (default: this node), waiting for confirmation. For reason "orphan_games_recovery"
        a sync that reached a node also announces ORPHAN_GAMES_REGISTERED."""
        board_type = num_players = None
        if config_key:
            parsed = parse_config_key(config_key)
            if parsed is None:
                raise SyncRequestError(f"config_key {config_key!r}: use <board>_<n>p, e.g. hex8_2p")
            board_type, num_players = parsed
        request = SyncRequest(data_type=data_type, targets=targets or [self.node_id], board_type=board_type,
                              num_players=num_players, priority="critical", require_confirmation=True,
                              timeout_seconds=timeout_seconds, sources=[source_node] if source_node else None)
        response = await self.sync(request)
        response.details["reason"] = reason
        if reason == "orphan_games_recovery" and response.nodes_synced > 0:
            registered = sum(n["files"] for n in response.details.get("nodes", {}).values())
            await self.router.publish("ORPHAN_GAMES_REGISTERED", {
                "registered_count": registered, "config_key": config_key or "", "board_type": board_type or "",
                "num_players": num_players or 0, "source_node": source_node or "", "request_id": request.request_id,
            }, source=f"sync_facade:{self.node_id}", correlation_id=request.request_id)
        return response

    # -- observability -------------------------------------------------------------------------------------

    def health_check(self) -> HealthCheckResult:
        return self.stats.health_check()

    def get_stats(self) -> dict[str, Any]:
        return self.stats.get_stats()


def _response(backend: SyncBackend, progress: Mapping[str, NodeProgress], details: dict[str, Any], *,
              confirmed: bool) -> SyncResponse:
    errors = [f"{n}: {p.error}" for n, p in progress.items() if p.status in ("failed", "timeout", "down")]
    synced = sum(1 for p in progress.values() if p.status == "completed")
    return SyncResponse(success=not errors and (synced == len(progress) or not confirmed), backend_used=backend,
                        nodes_synced=synced, bytes_transferred=sum(p.bytes_transferred for p in progress.values()),
                        errors=errors, details={**details, "nodes": {n: p.as_dict() for n, p in progress.items()}})


_facade: SyncFacade | None = None


def get_sync_facade() -> SyncFacade:
    """The process's facade, on the process's router and settings from the environment."""
    global _facade
    if _facade is None:
        _facade = SyncFacade()
    return _facade


def reset_sync_facade() -> None:
    """Forget the process's facade (tests)."""
    global _facade
    _facade = None


async def sync(request: SyncRequest | Mapping[str, Any] | str = "games", **overrides: Any) -> SyncResponse:
    """`get_sync_facade().sync(request, **overrides)`."""
    return await get_sync_facade().sync(request, **overrides)
