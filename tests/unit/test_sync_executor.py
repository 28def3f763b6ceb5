"""The DISTRIBUTED executor with a stand-in transfer: one transfer per file however many ask,
alternatives when a source fails, and the priority order of waiting transfers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coordination import sync_executor
from coordination.sync_executor import PrioritySlots, PullOutcome, SyncExecutor
from coordination.sync_manifest import FileEntry
from coordination.sync_planner import PlannedPull
from coordination.sync_transfer import TransferFailed, TransferResult


def pull(path: str, source: str = "a", *alternatives: str, size: int = 100) -> PlannedPull:
    entry = FileEntry(path=path, size=size, sha256="0" * 64, mtime=1.0, data_type=path.split("/")[0])  # type: ignore[arg-type]
    return PlannedPull(entry, source, f"http://{source}", tuple((n, f"http://{n}") for n in alternatives))


class FakeTransfers:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.buckets: list[Any] = []
        self.release = asyncio.Event()

    async def __call__(self, base_url: str, entry: FileEntry, data_dir: Any, secret: Any,
                       **options: Any) -> TransferResult:
        self.calls.append((base_url, entry.path))
        self.buckets.append(options.get("bucket"))
        await self.release.wait()
        if base_url in self.failing:
            raise TransferFailed(entry.path, f"{base_url} answered 404 (no such file)")
        return TransferResult(entry.path, entry.size, 0.01, resumed=False, attempts=1)


@pytest.fixture
def transfers(monkeypatch: pytest.MonkeyPatch) -> FakeTransfers:
    fake = FakeTransfers()
    monkeypatch.setattr(sync_executor, "transfer_file", fake)
    return fake


async def test_two_pulls_of_one_file_share_one_transfer(tmp_path: Path, transfers: FakeTransfers) -> None:
    executor = SyncExecutor(tmp_path, "s", "b", max_concurrent=2)
    first, second = PullOutcome(), PullOutcome()
    running = [asyncio.create_task(executor.pull([pull("games/g.db")], first)),
               asyncio.create_task(executor.pull([pull("games/g.db"), pull("games/h.db")], second))]
    await asyncio.sleep(0.05)
    assert executor.active_transfers == 2
    transfers.release.set()
    await asyncio.gather(*running)
    assert sorted(transfers.calls) == [("http://a", "games/g.db"), ("http://a", "games/h.db")]
    assert (first.files, first.shared, first.bytes_transferred) == (["games/g.db"], [], 100)
    assert (second.files, second.shared, second.bytes_transferred) == (["games/h.db"], ["games/g.db"], 100)
    assert executor.active_transfers == 0
    await executor.close()


async def test_a_failing_source_hands_over_to_the_alternatives(tmp_path: Path, transfers: FakeTransfers) -> None:
    transfers.failing = {"http://a", "http://c"}
    transfers.release.set()
    executor = SyncExecutor(tmp_path, "s", "b")
    outcome = PullOutcome()
    await executor.pull([pull("games/g.db", "a", "c", "d"), pull("games/h.db", "a", "c")], outcome)
    assert outcome.files == ["games/g.db"] and outcome.bytes_transferred == 100
    assert outcome.failed == {"games/h.db": "from a: http://a answered 404 (no such file); "
                                            "from c: http://c answered 404 (no such file)"}
    assert not outcome.ok
    await executor.close()


async def test_one_requests_transfers_share_its_bandwidth_limit(tmp_path: Path, transfers: FakeTransfers) -> None:
    transfers.release.set()
    executor = SyncExecutor(tmp_path, "s", "b", max_concurrent=2)
    await executor.pull([pull("games/g.db"), pull("games/h.db")], PullOutcome(), bandwidth_limit_mbps=80)
    await executor.pull([pull("games/i.db")], PullOutcome())
    first, second, unlimited = transfers.buckets
    assert first is second and first.rate == 10_000_000  # 80 Mbit/s in bytes per second
    assert unlimited is None
    await executor.close()


async def test_waiting_transfers_go_by_priority_and_critical_ones_do_not_wait() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def hold(name: str, priority: str) -> None:
        async with slots.hold(priority):
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(hold("first", "normal"))
    await asyncio.sleep(0.01)
    waiting = [asyncio.create_task(hold(name, priority)) for name, priority in
               (("low", "low"), ("normal", "normal"), ("high", "high"))]
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(hold("critical", "critical"))
    await asyncio.sleep(0.01)
    assert order == ["first", "critical"] and slots.active == 2
    gate.set()
    await asyncio.gather(first, urgent, *waiting)
    assert order == ["first", "critical", "high", "normal", "low"] and slots.active == 0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    slots = PrioritySlots(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with slots.hold("normal"):
            await gate.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    await holder
    assert slots.active == 0
    with pytest.raises(ValueError, match="max_concurrent must be >= 1"):
        PrioritySlots(0)
