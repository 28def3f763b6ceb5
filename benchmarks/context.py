"""What every workload's parent side gets from the runner: settings, the launcher, progress output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from benchmarks.procs import Launcher
from benchmarks.settings import Settings

__all__ = ["Context"]


@dataclass
class Context:
    settings: Settings
    launcher: Launcher
    faststream_missing: str | None  # None when FastStream can be imported, else why not
    console: Console  # progress, on stderr

    def progress(self, message: str) -> None:
        self.console.print(f"[dim]bench:[/dim] {message}", highlight=False)

    def spec(self, workload: str, **fields: Any) -> dict[str, Any]:
        """A child's spec: the workload, the services and the sizes of this run, plus `fields`."""
        s = self.settings
        return {"workload": workload, "redis_url": s.redis_url, "kafka_bootstrap": s.kafka_bootstrap,
                "warmup_s": s.warmup_s, "window_s": s.window_s, **fields}
