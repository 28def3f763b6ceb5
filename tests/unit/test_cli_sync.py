"""`coord sync` without services: bad input is one line on stderr with exit status 2, an unreachable
broker is exit status 3, and the progress rows a person reads."""

from __future__ import annotations

import pytest

from coordination.cli import main
from coordination.cli_sync import _row
from coordination.sync_commands import NodeProgress


@pytest.mark.parametrize(("args", "message"), [
    (["sync", "videos"], "Invalid value for '{games|models|npz|all}': 'videos' is not one of"),
    (["sync", "games", "--num-players", "0"], "Invalid value for '--num-players'"),
    (["sync", "games", "--bandwidth-mbps", "0"], "Invalid value for '--bandwidth-mbps'"),
    (["sync", "games", "--priority", "urgent"], "Invalid value for '--priority'"),
    (["sync", "games", "--to", ""], "targets must be a list of non-empty names (got [''])"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("coord: error: ") and message in err and err.count("\n") == 1


def test_an_unreachable_broker_is_exit_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RINGRIFT_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("RINGRIFT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["--timeout", "0.5", "sync", "games", "--to", "b"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("coord: error: BrokerUnavailable") and err.count("\n") == 1


def test_progress_rows() -> None:
    assert _row(NodeProgress("b")) == ("b", "requested", "", "", "", "")
    assert _row(NodeProgress("b", "started", planned_files=3, planned_bytes=2_500_000)) == \
        ("b", "started", "3 planned", "2.5 MB planned", "", "")
    done = NodeProgress("b", "completed", files=2, shared_files=1, bytes_transferred=10_000_000, duration_seconds=2.0)
    assert _row(done) == ("b", "completed", "2 (+1 shared)", "10.0 MB", "40.0 Mbit/s", "")
    assert _row(NodeProgress("c", "timeout", error="no answer within 5 s")) == \
        ("c", "timeout", "0", "0 B", "", "no answer within 5 s")
