"""The results table (rich): one section per workload, each comparison with PASS/MISS beside it."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from benchmarks.results import FASTSTREAM, RAW, TARGET, Check, Row

__all__ = ["markdown_table", "print_table"]

_COLUMNS = (RAW, FASTSTREAM, TARGET)


def _check_text(checks: Sequence[Check], column: str) -> Text:
    text = Text()
    for check in (c for c in checks if c.column == column):
        if text:
            text.append("\n")
        text.append(check.text)
        if check.verdict:
            text.append(f" {check.verdict}", style="bold green" if check.passed else "bold red")
            text.append(f" ({check.target})", style="dim")
    return text


def print_table(rows: Sequence[Row], title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=title, box=box.SIMPLE_HEAVY, show_lines=False, title_justify="left")
    table.add_column("W", no_wrap=True)
    table.add_column("cell")
    table.add_column("contender")
    table.add_column("median [min-max]", justify="right")
    table.add_column("CPU s/100k", justify="right")
    table.add_column("vs raw")
    table.add_column("vs FastStream")
    table.add_column("target")
    previous = None
    for row in rows:
        if previous is not None and row.workload != previous:
            table.add_section()
        previous = row.workload
        cpu = row.cpu_per_100k
        cpu_text = "" if cpu is None else f"{cpu.median:.2f}"
        result = Text(row.result_text(), style="red" if row.error else "")
        if row.error or row.note:
            result.append(f"\n{row.error or row.note}", style="dim red" if row.error else "dim")
        table.add_row(row.workload, row.cell, row.contender, result, cpu_text,
                      *(_check_text(row.checks, column) for column in _COLUMNS))
    console.print(table)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown_table(rows: Sequence[Row]) -> str:
    """The same table as GitHub markdown (benchmarks/README.md keeps the last full run's)."""
    lines = ["| W | cell | contender | median [min-max] | CPU s/100k | vs raw | vs FastStream | target |",
             "| --- | --- | --- | --- | ---: | --- | --- | --- |"]
    for row in rows:
        result = row.result_text() + (f"<br>*{row.error or row.note}*" if row.error or row.note else "")
        checks = []
        for column in _COLUMNS:
            parts = [c.text + (f" **{c.verdict}** ({c.target})" if c.verdict else "")
                     for c in row.checks if c.column == column]
            checks.append("<br>".join(parts))
        cpu = "" if row.cpu_per_100k is None else f"{row.cpu_per_100k.median:.2f}"
        lines.append("| " + " | ".join(_cell(x) for x in (row.workload, row.cell, row.contender, result, cpu,
                                                           *checks)) + " |")
    return "\n".join(lines) + "\n"
