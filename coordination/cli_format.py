"""What every `coord` command shares: time parsing, output (tables, JSON) and the one-line error.

    parse_time("10m") / parse_time("2026-01-01T12:00:00Z") / parse_time("1767225600")  -> aware datetime
    format_ts(1767225600.0)                     -> "2026-01-01 00:00:00.000"  (UTC)
    print_table(["id", "type"], rows)           -> a rich table on stdout
    print_json(data)                            -> indented JSON on stdout (`--json`)

`CliError` is the only error a command raises on purpose: `coordination.cli.main` prints its message as
one line on stderr and exits with its `exit_code`; every other exception is turned into one line there.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["CliError", "format_ts", "parse_duration", "parse_time", "print_json", "print_table", "stdout"]

# Piped output gets a wide console: a table squeezed to 80 columns would cut ids in half.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 250)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class CliError(Exception):
    """A failure to report to the user as one line (no traceback); `exit_code` is the process's."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_duration(text: str) -> timedelta:
    """"90s", "10m", "2h", "7d", "1w", "500ms" -> a timedelta; CliError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise CliError(f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 10m")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago ("10m"), an ISO-8601 time (UTC when it names no zone) or epoch
    seconds. Raises CliError with the accepted forms."""
    value = text.strip()
    if _DURATION.match(value):
        return (now or datetime.now(UTC)) - parse_duration(value)
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise CliError(f"bad time {text!r}: use a duration ago (10m, 2h, 7d), an ISO-8601 time "
                       "(2026-01-01T12:00:00Z) or epoch seconds") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def format_ts(timestamp: float) -> str:
    """Epoch seconds as a UTC time a person reads ("" for 0)."""
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
    table = Table(*columns, title=title, title_justify="left", header_style="bold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout.print(table)


def print_json(data: Any) -> None:
    # plain print, not rich: scripts parse it, and rich would wrap long strings
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
