"""Throughput cells: repetitions interleaved across contenders, then one row per contender.

`collect` runs, for each repetition, one child per contender in turn (raw, ours, FastStream, raw,
ours, ...), so a burst of noise from elsewhere on the machine lands on all of them alike rather
than on one contender's every repetition. A child returns one sample per mode it measured
(W1: awaited, concurrent, batch). `Samples.rows` turns a mode into rows: median and range of the
rate and of CPU seconds per 100k events, our rows compared with the raw and FastStream medians.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.context import Context
from benchmarks.measure import Sample, Summary
from benchmarks.procs import ChildFailed
from benchmarks.results import FASTSTREAM, RAW, Check, Row, ratio_check

__all__ = ["Contender", "Samples", "collect"]


@dataclass(frozen=True)
class Contender:
    who: str  # what the child runs ("raw", "router", ...)
    role: str  # "ours", RAW, FASTSTREAM or "reference" (shown, compared with nothing)
    label: str  # what the table shows

    @property
    def needs_faststream(self) -> bool:
        return self.who.startswith("faststream")


class Samples:
    def __init__(self, contenders: list[Contender], faststream_missing: str | None) -> None:
        self.contenders = contenders
        self.faststream_missing = faststream_missing
        self.by: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        self.errors: dict[str, str] = {}

    def summary(self, who: str, mode: str) -> tuple[Summary | None, Summary | None]:
        """(rate, CPU seconds per 100k events) over the repetitions, or Nones."""
        samples = self.by.get((who, mode))
        if not samples:
            return None, None
        return Summary.of([s.rate for s in samples]), Summary.of([s.cpu_per_100k for s in samples])

    def rows(self, workload: str, cell: str, mode: str, targets: tuple[float | None, float | None] = (None, None),
             missing: dict[str, str] | None = None) -> list[Row]:
        """One row per contender; ours compared with raw (target targets[0]) and FastStream (targets[1]).
        A reference contender with no figure and no error (it did not run) gets no row."""
        raw = next((self.summary(c.who, mode)[0] for c in self.contenders if c.role == RAW), None)
        fast = next((self.summary(c.who, mode)[0] for c in self.contenders if c.role == FASTSTREAM), None)
        rows = []
        for c in self.contenders:
            rate, cpu = self.summary(c.who, mode)
            if c.role == "reference" and rate is None and c.who not in self.errors:
                continue
            row = Row(workload, cell, c.label, c.role, value=rate, cpu_per_100k=cpu,
                      data={"samples": [s.as_dict() for s in self.by.get((c.who, mode), [])]})
            if c.who in self.errors:
                row.error = self.errors[c.who]
            elif rate is None and c.role == FASTSTREAM and self.faststream_missing:
                row.note = self.faststream_missing
            elif rate is None and missing and c.who in missing:
                row.note = missing[c.who]
            if c.role == "ours" and rate is not None:
                row.checks = [check for check in (ratio_check(rate, raw, RAW, targets[0]),
                                                  ratio_check(rate, fast, FASTSTREAM, targets[1])) if check]
                if fast is None and targets[1] is not None:
                    row.checks.append(Check(FASTSTREAM, "n/a", f">= {targets[1]:g}x"))
            rows.append(row)
        return rows


def collect(ctx: Context, contenders: list[Contender], spec_for: Callable[[str], dict[str, Any]],
            reps: int | None = None) -> Samples:
    """Run every contender's child `reps` times (default: the run's), interleaved."""
    samples = Samples(contenders, ctx.faststream_missing)
    for _ in range(reps or ctx.settings.reps):
        for c in contenders:
            if c.who in samples.errors or (c.needs_faststream and ctx.faststream_missing):
                continue
            try:
                result = ctx.launcher.run(spec_for(c.who))
            except ChildFailed as exc:
                samples.errors[c.who] = str(exc)
                ctx.progress(f"[red]{exc}[/red]")
                continue
            for mode, sample in result.items():
                samples.by[(c.who, mode)].append(Sample(**sample))
    return samples
