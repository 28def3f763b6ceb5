"""Child processes: each measured contender runs in its own process, pinned to a core with taskset.

A child is `python -m benchmarks.child '<json spec>'`. It prints `READY` once it is set up (when the
parent must wait for that, as W3's consumer before its producer starts) and `RESULT <json>` at the
end; its stderr goes to a file whose tail is quoted if it fails. One process per measurement keeps the
contenders apart: no connection, task or garbage of one is left behind for the next.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["REPO", "Child", "ChildFailed", "Launcher"]

REPO = Path(__file__).resolve().parent.parent


class ChildFailed(Exception):
    """A child exited with an error, printed no result, or ran out of time (one line, for the table)."""


class Child:
    def __init__(self, command: list[str], what: str, env: dict[str, str] | None = None) -> None:
        self.what = what
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _fail(self, why: str) -> ChildFailed:
        self.kill()
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1].strip() if lines else "no output"
        return ChildFailed(f"{self.what}: {why}: {tail}"[:300])

    def ready(self, timeout_s: float, marker: str = "READY") -> str:
        """Wait for the child's line containing `marker` (READY by default); returns that line."""
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.proc.stdout], [], [], left)[0]:
                break
            line = self.proc.stdout.readline()
            if marker in line:
                return line.strip()
            if not line and self.proc.poll() is not None:
                raise self._fail(f"exited with {self.proc.returncode} before it was ready")
        raise self._fail(f"not ready within {timeout_s:g} s")

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise self._fail(f"no result within {timeout_s:g} s") from None
        for line in reversed(out.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise self._fail(f"exited with {self.proc.returncode} without a result")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Launcher:
    """Starts children, pinned where the machine allows (taskset and at least two cores)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.cores = sorted(os.sched_getaffinity(0))
        self.taskset = shutil.which("taskset") if len(self.cores) >= 2 else None

    @property
    def pinning(self) -> str:
        if self.taskset is None:
            return f"none ({len(self.cores)} core(s){'' if len(self.cores) < 2 else ', no taskset'})"
        return f"taskset, cores {','.join(map(str, self.cores))}"

    def core(self, slot: int) -> int | None:
        """Slot 0: the core single-process measurements run on (the last); 1: the other one, and so on."""
        if self.taskset is None:
            return None
        return self.cores[(len(self.cores) - 1 - slot) % len(self.cores)]

    def pinned(self, argv: list[str], core: int | None) -> list[str]:
        return argv if core is None or self.taskset is None else [self.taskset, "-c", str(core), *argv]

    def start(self, spec: dict[str, Any], slot: int = 0) -> Child:
        argv = [sys.executable, "-m", "benchmarks.child", json.dumps(spec)]
        return Child(self.pinned(argv, self.core(slot)), f"{spec['workload']} {spec.get('who', '')}".strip())

    def spawn(self, argv: list[str], what: str, slot: int = 0, env: dict[str, str] | None = None) -> Child:
        """Any other program (W7's node agent), pinned like the children."""
        return Child(self.pinned(argv, self.core(slot)), what, env)

    def run(self, spec: dict[str, Any], slot: int = 0) -> dict[str, Any]:
        return self.start(spec, slot).result(self.timeout_s)
