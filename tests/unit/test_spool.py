"""The durable publish spool: order, durability across a reopen, corrupt records, the directory lock,
and the drainer (in order, waits while the bus is down, dead-letters what the broker refuses)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from brokers.errors import BrokerUnavailable, RecordTooLarge
from coordination.config import RouterConfig
from coordination.event_router import UnifiedEventRouter
from coordination.spool import Spool, SpoolDrainer, SpooledRecord, SpoolLocked, new_record


def _record(n: int, bus: str = "data") -> SpooledRecord:
    return new_record(bus, f"ns:{bus}", f"value-{n}".encode(), f"key-{n}", f"id-{n}")


def _ids(spool: Spool, bus: str) -> list[str]:
    return [record.event_id for _, record in spool.records(bus)]


def test_append_iterate_remove_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        entries = [spool.append(_record(n, "cross" if n % 3 == 0 else "data")) for n in range(1, 8)]
        assert _ids(spool, "data") == ["id-1", "id-2", "id-4", "id-5", "id-7"]
        assert _ids(spool, "cross") == ["id-3", "id-6"]
        assert spool.depths() == {"data": 5, "cross": 2} and spool.depth() == 7
        entry, record = spool.head("data")  # type: ignore[misc]
        assert entry == entries[0]
        assert (record.bus, record.topic, record.value, record.key) == ("data", "ns:data", b"value-1", "key-1")
        spool.remove(entries[0])
        spool.remove(entries[3])
        assert _ids(spool, "data") == ["id-2", "id-5", "id-7"]
        assert spool.head("data")[1].value == b"value-2"  # type: ignore[index]
        assert spool.head("nothing") is None
    finally:
        spool.close()


def test_records_survive_a_reopen_and_numbering_goes_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.append(_record(1))
    spool.append(_record(2, "stage"))
    spool.close()
    (tmp_path / "data" / "00000000000000000099.tmp").write_bytes(b"never acknowledged")

    again = Spool(tmp_path)
    try:
        assert again.depths() == {"data": 1, "stage": 1}
        assert _ids(again, "data") == ["id-1"] and _ids(again, "stage") == ["id-2"]
        assert not (tmp_path / "data" / "00000000000000000099.tmp").exists()
        later = again.append(_record(3))
        assert later.seq > 99 > first.seq
        assert _ids(again, "data") == ["id-1", "id-3"]
    finally:
        again.close()


def test_a_half_written_record_is_detected_set_aside_and_logged(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    spool.append(_record(1))
    spool.append(_record(2))
    tail = spool.append(_record(3))
    spool.close()
    tail.path.write_bytes(tail.path.read_bytes()[:-5])  # as if the write stopped half-way

    with caplog.at_level(logging.ERROR, logger="coordination.spool"):
        again = Spool(tmp_path)
    try:
        assert _ids(again, "data") == ["id-1", "id-2"]
        assert any("corrupt" in r.message and tail.path.name in r.message for r in caplog.records)
        assert tail.path.with_suffix(".corrupt").exists()  # kept for a human, never deleted
    finally:
        again.close()


def test_a_record_corrupted_after_the_scan_is_skipped_by_head(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    try:
        bad = spool.append(_record(1))
        spool.append(_record(2))
        bad.path.write_bytes(b"RRS1garbage")
        with caplog.at_level(logging.ERROR, logger="coordination.spool"):
            assert spool.head("data")[1].event_id == "id-2"  # type: ignore[index]
        assert spool.depth("data") == 1 and "corrupt" in caplog.text
    finally:
        spool.close()


def test_a_second_holder_of_the_directory_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    try:
        with pytest.raises(SpoolLocked, match=str(tmp_path)):
            Spool(tmp_path)
    finally:
        spool.close()
    Spool(tmp_path).close()  # free again once closed


async def test_drainer_sends_in_order_waits_while_down_and_dead_letters_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(1, 6):
        spool.append(_record(n))
    spool.append(_record(6, "cross"))
    up = asyncio.Event()
    sent: list[str] = []
    dead: list[str] = []
    probes = 0

    async def send(record: SpooledRecord) -> None:
        if not up.is_set():
            raise BrokerUnavailable("down")
        if record.event_id == "id-3":
            raise RecordTooLarge(10, 5, record.topic)
        sent.append(record.event_id)

    async def probe(bus: str) -> None:
        nonlocal probes
        probes += 1
        if not up.is_set():
            raise BrokerUnavailable("down")

    async def dead_letter(record: SpooledRecord, exc: BaseException) -> None:
        dead.append(record.event_id)

    drainer = SpoolDrainer(spool, send, probe, dead_letter, send_timeout_s=1, probe_timeout_s=1, backoff_max_s=0.05)
    try:
        drainer.wake()
        await asyncio.sleep(0.3)
        assert sent == [] and probes >= 3 and spool.depth() == 6  # backing off while down
        up.set()
        async with asyncio.timeout(5):
            while spool.depth() or drainer.running:
                await asyncio.sleep(0.01)
        assert [i for i in sent if i != "id-6"] == ["id-1", "id-2", "id-4", "id-5"] and "id-6" in sent
        assert dead == ["id-3"] and drainer.drained == 5 and drainer.dead_lettered == 1
        spool.append(_record(7))  # a later append needs a new task: wake() starts it
        drainer.wake("data")
        async with asyncio.timeout(5):
            while spool.depth():
                await asyncio.sleep(0.01)
        assert sent[-1] == "id-7"
    finally:
        await drainer.stop()
        spool.close()


async def test_two_routers_cannot_share_a_spool_dir(tmp_path: Path) -> None:
    name = f"mem-{tmp_path.name}"
    config = RouterConfig(redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}", node_id="a",
                          spool_dir=str(tmp_path / "spool"))
    first, second = UnifiedEventRouter(config), UnifiedEventRouter(config)
    await first.start()
    try:
        await first.publish("TRAINING_COMPLETED", {"n": 1})
        stats = first.get_stats()
        assert stats["spooled"] == 0 and stats["spool_depth"] == {"total": 0} and stats["spool_drained"] == 0
        with pytest.raises(SpoolLocked, match=str(tmp_path / "spool")):
            await second.start()
    finally:
        await first.stop()
    await second.start()  # free once the first stopped
    await second.stop()
