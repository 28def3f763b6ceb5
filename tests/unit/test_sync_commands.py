"""The control plane's messages and readers on the memory broker: commands, answers, progress,
the answer watcher, the sync records and the paths distribution events name."""

from __future__ import annotations

import time

import msgspec
import pytest

import brokers
from coordination.config import RouterConfig
from coordination.daemons.distribution import data_path
from coordination.sync_commands import (
    AnswerWatcher,
    CommandError,
    NodeProgress,
    SyncCommand,
    command_routes,
    completed_payload,
    failed_payload,
    started_payload,
)
from coordination.sync_executor import PullOutcome
from coordination.sync_manifest import FileEntry, Manifest
from coordination.sync_peers import PeerDirectory, PeerRecord, manifests_topic
from schemas.envelope import RouterEvent, encode
from tests.support import unique


def command(**fields: object) -> SyncCommand:
    values: dict[str, object] = {"request_id": "r1", "targets": ["b", "c"], "data_types": ["games"],
                                 "deadline": time.time() + 60}
    values.update(fields)
    return SyncCommand(**values)  # type: ignore[arg-type]


def test_a_command_round_trips_through_an_event_payload() -> None:
    sent = command(board_type="hex8", num_players=2, paths=["games/hex8_2p.db"], sources=["a"], exclude=["d"],
                   priority="critical", bandwidth_limit_mbps=50.0, requester="ops", backend="router")
    got = SyncCommand.from_event(RouterEvent.new("SYNC_REQUEST", sent.payload()))
    assert got == sent and got.addressed_to("b") and not got.addressed_to("a")
    flt = got.sync_filter()
    assert (flt.data_types, flt.board_type, flt.num_players, flt.paths) == \
        (frozenset({"games"}), "hex8", 2, frozenset({"games/hex8_2p.db"}))
    assert "board_type" not in command().payload()  # defaults are left out


def test_a_malformed_command_names_its_field() -> None:
    event = RouterEvent.new("SYNC_REQUEST", {"request_id": "r1", "targets": "b", "data_types": ["games"],
                                             "deadline": 1.0})
    with pytest.raises(CommandError, match=r"malformed SYNC_REQUEST .*targets"):
        SyncCommand.from_event(event)
    with pytest.raises(CommandError, match="missing required field `deadline`"):
        SyncCommand.from_event(RouterEvent.new("SYNC_REQUEST", {"request_id": "r", "targets": [], "data_types": []}))


def test_commands_ride_the_cross_bus_only_and_the_data_bus_without_kafka() -> None:
    assert command_routes(RouterConfig(kafka_bootstrap="k:9092")) == {
        "route_to_data_bus": False, "route_to_stage_bus": False, "route_to_cross_process": True}
    assert command_routes(RouterConfig(kafka_bootstrap=None))["route_to_data_bus"] is True


def test_progress_follows_the_answers() -> None:
    cmd = command()
    progress = NodeProgress("b")
    progress.apply(RouterEvent.new("DATA_SYNC_STARTED", started_payload(cmd, "b", 2, 300, ["a"])))
    assert (progress.status, progress.planned_files, progress.planned_bytes) == ("started", 2, 300)
    outcome = PullOutcome(files=["games/x.db"], shared=["games/y.db"], bytes_transferred=200, duration_s=1.5)
    progress.apply(RouterEvent.new("DATA_SYNC_COMPLETED", completed_payload(cmd, "b", outcome)))
    assert (progress.status, progress.files, progress.shared_files, progress.bytes_transferred,
            progress.duration_seconds) == ("completed", 1, 1, 200, 1.5)
    progress.apply(RouterEvent.new("DATA_SYNC_FAILED", failed_payload(cmd, "b", "late")))
    assert progress.status == "completed" and progress.finished  # the first final answer stands

    failed = NodeProgress("c")
    failed.apply(RouterEvent.new("DATA_SYNC_FAILED", failed_payload(cmd, "c", "disk full")))
    assert (failed.status, failed.error) == ("failed", "disk full")


def test_answer_payloads_carry_what_the_catalog_payloads_expect() -> None:
    payload = completed_payload(command(), "b", PullOutcome(files=["games/a.db", "models/m.pth"],
                                                            bytes_transferred=9, duration_s=0.25))
    assert {k: payload[k] for k in ("request_id", "node_id", "host", "games_synced", "bytes_transferred",
                                    "duration")} == {"request_id": "r1", "node_id": "b", "host": "b",
                                                     "games_synced": 1, "bytes_transferred": 9, "duration": 0.25}
    assert completed_payload(None, "b", PullOutcome())["request_id"] == ""  # a gossip cycle's own


async def test_the_answer_watcher_sees_only_its_requests_answers_once() -> None:
    async with brokers.connect(f"memory://{unique('answers')}") as broker:
        since = time.time()
        mine = RouterEvent.new("DATA_SYNC_STARTED", {"request_id": "r1", "node_id": "b"}, correlation_id="r1")
        other = RouterEvent.new("DATA_SYNC_STARTED", {"request_id": "r2", "node_id": "b"}, correlation_id="r2")
        unrelated = RouterEvent.new("TRAINING_COMPLETED", {"request_id": "r1"})
        for event in (mine, other, unrelated):
            await broker.publish_raw("t", encode(event))
        watcher = AnswerWatcher(broker, "t", "r1", since=since)
        assert [e.event_id for e in await watcher.poll()] == [mine.event_id]
        assert await watcher.poll() == []
        done = RouterEvent.new("DATA_SYNC_COMPLETED", {"request_id": "r1", "node_id": "b"})
        await broker.publish_raw("t", encode(done))
        assert [e.event_type for e in await watcher.poll()] == ["DATA_SYNC_COMPLETED"]


def test_a_sync_record_is_live_until_three_intervals_pass_or_it_stops() -> None:
    files = [FileEntry(path="games/g.db", size=5, sha256="0" * 64, mtime=1.0, data_type="games")]
    record = PeerRecord.for_manifest(Manifest("a", files, 0.0), "http://a", announce_interval_s=10.0)
    assert record.digest == Manifest("a", files, 0.0).digest and record.summary["files"] == 1
    assert record.is_live(record.updated_at + 30) and not record.is_live(record.updated_at + 31)
    assert not PeerRecord(node_id="a", data_url=None, updated_at=time.time()).can_serve()
    assert not PeerRecord(node_id="a", data_url="http://a", updated_at=time.time(), status="stopped").is_live()


async def test_the_directory_keeps_the_newest_record_per_node_and_skips_foreign_records() -> None:
    async with brokers.connect(f"memory://{unique('peers')}") as broker:
        topic = manifests_topic("ns")
        directory = PeerDirectory(broker, topic)
        assert await directory.refresh() == {}
        now = time.time()
        await directory.announce(PeerRecord(node_id="a", data_url="http://a:1", updated_at=now - 5))
        await directory.announce(PeerRecord(node_id="b", data_url="http://b:1", updated_at=now))
        await broker.publish_raw(topic, b'{"node_id": 3}', key="x")
        await broker.publish_raw(topic, encode(RouterEvent.new("TRAINING_COMPLETED", {})), key="y")
        assert {n: r.data_url for n, r in (await directory.refresh()).items()} == {"a": "http://a:1", "b": "http://b:1"}
        await directory.announce(PeerRecord(node_id="a", data_url="http://a:2", updated_at=now))
        await directory.announce(PeerRecord(node_id="b", data_url="http://b:0", updated_at=now - 60))  # older: kept out
        peers = await PeerDirectory(broker, topic).refresh()  # a fresh reader folds the same way
        assert {n: r.data_url for n, r in peers.items()} == {"a": "http://a:2", "b": "http://b:1"}
        assert {n: r.data_url for n, r in (await directory.refresh()).items()} == {"a": "http://a:2",
                                                                                 "b": "http://b:1"}
        assert msgspec.json.decode(msgspec.json.encode(peers["a"]), type=PeerRecord) == peers["a"]


@pytest.mark.parametrize(("value", "expected"), [
    ("models/canonical_hex8_2p.pth", "models/canonical_hex8_2p.pth"),
    ("/srv/ringrift/data/models/canonical_hex8_2p.pth", "models/canonical_hex8_2p.pth"),
    ("/srv/models/v2/models/best.pth", "models/best.pth"),
    ("models/archive/hex8_2p_v3.pth", "models/archive/hex8_2p_v3.pth"),
    ("canonical_hex8_2p.pth", "models/canonical_hex8_2p.pth"),
    ("C:\\runs\\models\\x.pth", "models/x.pth"),
])
def test_data_path_of_an_event_path(value: str, expected: str) -> None:
    assert data_path("models", value) == expected


@pytest.mark.parametrize("value", ["", "models/", "models/.hidden.pth", "models/x.pth.part"])
def test_data_path_refuses_what_the_data_plane_does_not_sync(value: str) -> None:
    with pytest.raises(ValueError, match="does not name a file the data plane syncs under models/"):
        data_path("models", value)
