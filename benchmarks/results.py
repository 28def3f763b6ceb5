"""What a workload reports: rows (one per contender and cell) with their comparisons and targets.

A `Check` is one comparison printed in the table: a ratio against the raw client or FastStream, a
difference (W3's added latency) or an absolute figure against a target; `passed` is None when the
comparison has no target. Rows carry their numbers for the JSON output as well.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.measure import Summary

__all__ = ["Check", "Row", "at_least", "at_most", "ratio_check", "ratio_text"]

RAW, FASTSTREAM, TARGET = "raw", "faststream", "target"


@dataclass(frozen=True)
class Check:
    column: str  # RAW, FASTSTREAM or TARGET: where the table prints it
    text: str  # "0.62x", "+0.31 ms", "84 µs"
    target: str = ""  # ">= 0.8x"
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "MISS")

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.column, "text": self.text, "target": self.target, "verdict": self.verdict}


@dataclass
class Row:
    workload: str  # "W1"
    cell: str  # "Redis, concurrent publishers"
    contender: str  # "ours: router", "raw: pipelined XADD", "FastStream"
    role: str  # "ours", RAW or FASTSTREAM
    unit: str = "events/s"
    value: Summary | None = None
    text: str = ""  # the result when it is not one summary (W3's percentiles, W7's figures)
    cpu_per_100k: Summary | None = None
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # extra figures for the JSON output

    def result_text(self) -> str:
        if self.error:
            return "error"
        if self.text:
            return self.text
        if self.value is None:
            return "-"
        if self.value.n == 1:
            return f"{_num(self.value.median)} {self.unit}"
        return f"{_num(self.value.median)} [{_num(self.value.low)}-{_num(self.value.high)}] {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "cell": self.cell, "contender": self.contender, "role": self.role,
                "unit": self.unit, "result": self.result_text(),
                "value": self.value.as_dict() if self.value else None,
                "cpu_s_per_100k": self.cpu_per_100k.as_dict() if self.cpu_per_100k else None,
                "checks": [c.as_dict() for c in self.checks], "note": self.note, "error": self.error,
                "data": self.data}


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def ratio_check(ours: Summary | None, other: Summary | None, column: str, minimum: float | None = None) -> Check | None:
    """ours / other (medians), against `minimum` when given; None when either side has no figure."""
    if ours is None or other is None or other.median <= 0:
        return None
    ratio = ours.median / other.median
    text = ratio_text(ratio)
    if minimum is None:
        return Check(column, text)
    return Check(column, text, f">= {minimum:g}x", ratio >= minimum)


def ratio_text(ratio: float) -> str:
    """0.62x, or two significant digits below 0.1 (0.0047x)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def at_least(value: float, minimum: float, text: str, unit: str = "") -> Check:
    return _absolute(value, text, f">= {minimum:g}{unit}", operator.ge, minimum)


def at_most(value: float, maximum: float, text: str, unit: str = "") -> Check:
    return _absolute(value, text, f"<= {maximum:g}{unit}", operator.le, maximum)


def _absolute(value: float, text: str, target: str, op: Callable[[float, float], bool], bound: float) -> Check:
    return Check(TARGET, text, target, op(value, bound))
