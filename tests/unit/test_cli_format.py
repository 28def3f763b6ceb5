"""Time parsing and error fingerprints of the `coord` CLI (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordination.cli import main
from coordination.cli_dlq import normalize_message
from coordination.cli_format import CliError, parse_duration, parse_time

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - timedelta(minutes=10)), ("2h", NOW - timedelta(hours=2)), ("7d", NOW - timedelta(days=7)),
    ("90s", NOW - timedelta(seconds=90)), ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ("2026-01-01T10:00:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ("2026-01-01T10:00:00+02:00", datetime(2026, 1, 1, 8, tzinfo=UTC)),
    ("1767225600", datetime(2026, 1, 1, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "10 parsecs", "", "-5m", "2026-13-01"])
def test_bad_time_is_a_cli_error(text: str) -> None:
    with pytest.raises(CliError, match="bad time"):
        parse_time(text, now=NOW)


def test_parse_duration() -> None:
    assert parse_duration("500ms") == timedelta(milliseconds=500)
    with pytest.raises(CliError, match="bad duration"):
        parse_duration("5 years")


def test_normalize_message_replaces_what_varies() -> None:
    a = normalize_message("timeout after 31.2 s on 6c0e1f2a-1b2c-4d5e-8f90-123456789abc (key 'hex8_2p')")
    b = normalize_message("timeout after 29.8 s on 01bc1f2a-1b2c-4d5e-8f90-123456789abc (key 'sq19_4p')")
    assert a == b == "timeout after <n> s on <uuid> (key <str>)"
    assert normalize_message("offset deadbeef00 at partition 3\nsecond line") == "offset <hex> at partition <n>"


def test_main_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # main() quiets the client libraries' loggers for the whole process: keep this one's as they are
    monkeypatch.setattr("coordination.cli.quiet_client_logs", lambda: None)
    assert main(["tail", "--since", "soon"]) != 0
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("coord ")
