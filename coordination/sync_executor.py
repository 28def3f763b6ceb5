"""The DISTRIBUTED backend: pull what this node lacks from its peers, once per file however many ask.

    executor = SyncExecutor(data_dir, secret, node_id, max_concurrent=2)
    outcome = await executor.sync(SyncFilter.of(["games"]), peers)        # peers: node id -> PeerRecord
    outcome.files, outcome.shared, outcome.failed, outcome.bytes_transferred

`sync` fetches the manifests of the peers that can serve (over HTTP, fresh: the compacted topic only
says who is there), plans with `sync_planner.plan_pulls` and runs the pulls with
`sync_transfer.transfer_file` into the data directory, trying a pull's alternative holders when its
source fails. Every node's sync commands and gossip go through one executor (the AUTO_SYNC daemon's),
which is what keeps two requests for the same file from transferring it twice: a pull whose (path,
SHA-256) is already in flight waits for that transfer and reports the file as `shared`.

At most `max_concurrent` transfers run at once (RINGRIFT_AUTO_SYNC_MAX_CONCURRENT); waiting pulls go
in priority order (critical, high, normal, low), and a critical one does not wait at all: "now".
The bandwidth limit of one `sync` call is shared by its transfers (one token bucket).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from coordination.sync_manifest import Manifest, ManifestBuilder
from coordination.sync_peers import PeerRecord
from coordination.sync_planner import PeerHolding, PlannedPull, SyncFilter, plan_pulls
from coordination.sync_transfer import DataPlaneError, TokenBucket, TransferResult, fetch_manifest, transfer_file

__all__ = ["PrioritySlots", "PullOutcome", "SyncExecutor"]

log = logging.getLogger(__name__)

_RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}


class PrioritySlots:
    """At most `limit` holders at once; waiters served by priority, then in arrival order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {limit}")
        self.limit = limit
        self.active = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: str) -> AsyncIterator[None]:
        rank = _RANK.get(priority, _RANK["normal"])
        if rank > 0 and (self.active >= self.limit or self._waiting):
            waiter = asyncio.get_running_loop().create_future()
            entry = (rank, next(self._order), waiter)
            heapq.heappush(self._waiting, entry)
            try:
                await waiter
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                elif waiter.done() and not waiter.cancelled():
                    self._release()  # the slot was handed over as we were cancelled
                raise
        else:
            self.active += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self.active -= 1
        while self._waiting and self.active < self.limit:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


@dataclass
class PullOutcome:
    files: list[str] = field(default_factory=list)  # transferred by this call
    shared: list[str] = field(default_factory=list)  # another request's transfer brought them
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    unreachable: dict[str, str] = field(default_factory=dict)  # peer -> why its manifest could not be read
    bytes_transferred: int = 0
    planned_bytes: int = 0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


class SyncExecutor:
    def __init__(self, data_dir: str | os.PathLike[str], secret: str | bytes, node_id: str, *,
                 max_concurrent: int = 1, builder: ManifestBuilder | None = None,
                 manifest_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(data_dir)
        self.secret = secret
        self.node_id = node_id
        self.builder = builder or ManifestBuilder(self.data_dir, node_id)
        self.slots = PrioritySlots(max_concurrent)
        self.manifest_timeout_s = manifest_timeout_s
        self.load: Counter[str] = Counter()  # transfers running per source node
        self._inflight: dict[tuple[str, str], asyncio.Task[TransferResult]] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def active_transfers(self) -> int:
        return len(self._inflight)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=30),
                                                  auto_decompress=False)
        return self._session

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=5.0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def local_manifest(self) -> Manifest:
        return await self.builder.scan()

    async def peer_holdings(self, peers: Mapping[str, PeerRecord], names: Collection[str],
                            unreachable: dict[str, str]) -> list[PeerHolding]:
        """The manifests of the named peers that can serve, fetched concurrently; failures go to `unreachable`."""
        async def one(record: PeerRecord) -> PeerHolding | None:
            assert record.data_url is not None
            try:
                manifest = await fetch_manifest(record.data_url, self.secret, timeout=self.manifest_timeout_s,
                                                session=self._client())
            except DataPlaneError as exc:
                unreachable[record.node_id] = exc.reason
                return None
            return PeerHolding(record.node_id, record.data_url, manifest, record.active_transfers)

        wanted = [peers[n] for n in names if n in peers and n != self.node_id and peers[n].data_url is not None]
        found = await asyncio.gather(*(one(r) for r in wanted))
        return [h for h in found if h is not None]

    async def plan(self, flt: SyncFilter, peers: Mapping[str, PeerRecord], *, sources: Collection[str] | None = None,
                   exclude: Collection[str] = (), unreachable: dict[str, str] | None = None) -> list[PlannedPull]:
        names = [n for n in peers if n not in exclude and (sources is None or n in sources)]
        holdings = await self.peer_holdings(peers, names, {} if unreachable is None else unreachable)
        return plan_pulls(await self.local_manifest(), holdings, flt, sources=sources, exclude=exclude,
                          load=self.load)

    async def sync(self, flt: SyncFilter, peers: Mapping[str, PeerRecord], *, sources: Collection[str] | None = None,
                   exclude: Collection[str] = (), bandwidth_limit_mbps: float | None = None,
                   priority: str = "normal") -> PullOutcome:
        """Plan against `peers` and pull; see the module docstring."""
        started = time.monotonic()
        outcome = PullOutcome()
        plan = await self.plan(flt, peers, sources=sources, exclude=exclude, unreachable=outcome.unreachable)
        await self.pull(plan, outcome, bandwidth_limit_mbps=bandwidth_limit_mbps, priority=priority)
        outcome.duration_s = time.monotonic() - started
        return outcome

    async def pull(self, plan: list[PlannedPull], outcome: PullOutcome, *, bandwidth_limit_mbps: float | None = None,
                   priority: str = "normal") -> None:
        """Run `plan` into `outcome`, joining transfers already in flight."""
        outcome.planned_bytes += sum(p.entry.size for p in plan)
        bucket = TokenBucket.from_mbps(bandwidth_limit_mbps) if bandwidth_limit_mbps else None
        waits: list[tuple[PlannedPull, asyncio.Task[TransferResult], bool]] = []
        for pull in plan:
            task = self._inflight.get(pull.key)
            joined = task is not None
            if task is None:
                task = asyncio.create_task(self._transfer(pull, bucket, priority), name=f"pull {pull.entry.path}")
                self._inflight[pull.key] = task
                task.add_done_callback(lambda _t, key=pull.key: self._inflight.pop(key, None))
            waits.append((pull, task, joined))
        for pull, task, joined in waits:
            try:
                result = await asyncio.shield(task)
            except DataPlaneError as exc:
                outcome.failed[pull.entry.path] = exc.reason
                continue
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():  # this caller is cancelled, not (only) the transfer
                    raise
                outcome.failed[pull.entry.path] = "transfer cancelled (the node is stopping)"
                continue
            if joined or result.attempts == 0:
                outcome.shared.append(pull.entry.path)
            else:
                outcome.files.append(pull.entry.path)
                outcome.bytes_transferred += result.bytes_transferred

    async def _transfer(self, pull: PlannedPull, bucket: TokenBucket | None, priority: str) -> TransferResult:
        async with self.slots.hold(priority):
            reasons = []
            for node, base_url in ((pull.source, pull.base_url), *pull.alternatives):
                self.load[node] += 1
                try:
                    return await transfer_file(base_url, pull.entry, self.data_dir, self.secret, bucket=bucket,
                                               session=self._client())
                except DataPlaneError as exc:
                    log.warning("pull of %s from %s failed: %s", pull.entry.path, node, exc.reason)
                    reasons.append(f"from {node}: {exc.reason}")
                finally:
                    self.load[node] -= 1
            raise DataPlaneError(pull.entry.path, "; ".join(reasons))
