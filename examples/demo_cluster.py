"""The demo's cluster: node agents as child processes, `coord` runs, foreign clients, the ledger files.

Used by examples/demo.py (`scripts/demo`). Every helper raises `DemoFailure` with what was expected
and what happened, so the demo stops at the first step that did not do what it said.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class DemoFailure(Exception):
    """A step did not do what the demo said it would."""


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0, every_s: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; DemoFailure naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoFailure(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Node:
    """One node agent (`coord node run`) in its own process, with its own Redis."""

    node_id: str
    profile: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[str] | None = None
    ready_line: str = ""
    _lines: list[str] = field(default_factory=list)

    def start(self, timeout_s: float = 60.0) -> str:
        command = [sys.executable, "-m", "coordination.cli", "node", "run", "--profile", self.profile,
                   "--node-id", self.node_id, "--health-port", "0", "--heartbeat-interval", "1",
                   "--log-level", "info"]
        self._lines = []
        log = open(self.log_path, "a")  # the child writes it until it stops
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log,
                                        text=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.ready_line = wait_for(f"node {self.node_id} to report ready (log: {self.log_path})",
                                   self._ready, timeout_s)
        return self.ready_line

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line.rstrip("\n"))

    def _ready(self) -> str | None:
        found = next((line for line in self._lines if " ready: " in line), None)
        if found is None and self.process is not None and self.process.poll() is not None:
            raise DemoFailure(f"node {self.node_id} exited with {self.process.returncode} before it was ready; "
                              f"its log: {self.log_path}")
        return found

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit code of a clean stop (DemoFailure if it was not clean)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise DemoFailure(f"node {self.node_id} did not stop within {timeout_s:g} s of SIGTERM") from None
        time.sleep(0.1)  # the stdout reader takes the last line
        if code != 0 or "node stopped" not in self._lines:
            raise DemoFailure(f"node {self.node_id} stopped with exit code {code} (log: {self.log_path})")
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run(command: Sequence[str], env: Mapping[str, str], *, check: bool = True, stdin: str | None = None,
        timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command (as a user would, in the repo); DemoFailure when `check` and it failed."""
    done = subprocess.run(list(command), cwd=ROOT, env=dict(env), input=stdin, capture_output=True, text=True,
                          timeout=timeout_s)
    if check and done.returncode != 0:
        shown = " ".join(command[:6]) + (" ..." if len(command) > 6 else "")
        raise DemoFailure(f"`{shown}` exited with {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


def coord(*args: str, env: Mapping[str, str], check: bool = True, stdin: str | None = None,
          timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "coordination.cli", *args], env, check=check, stdin=stdin, timeout_s=timeout_s)


def coord_json(*args: str, env: Mapping[str, str]) -> Any:
    done = coord(*args, "--json", env=env)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise DemoFailure(f"`coord {' '.join(args)} --json` printed no JSON: {exc}") from None


class Ledger:
    """The lines the example daemons (examples/game_ledger.py) appended, one per handling."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.directory.glob("*.jsonl")):
            found.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return found

    def handlings(self) -> Counter[tuple[str, str]]:
        """(daemon, event id) -> how many times it was handled."""
        return Counter((line["daemon"], line["event_id"]) for line in self.lines())

    def by_config(self, config_key: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["config_key"] == config_key]


def base_env(namespace: str, work: Path) -> dict[str, str]:
    """The environment shared by the demo's processes (the brokers come from scripts/services)."""
    env = dict(os.environ)
    env.update({"RINGRIFT_NAMESPACE": namespace, "RINGRIFT_LEDGER_DIR": str(work / "ledger"),
                "RINGRIFT_PLUGINS": "examples.game_ledger", "PYTHONPATH": str(ROOT),
                "RINGRIFT_EVENT_HANDLER_TIMEOUT": "10", "RINGRIFT_CLUSTER_SECRET": f"demo-{namespace}",
                "RINGRIFT_NO_COLOR": "1", "NO_COLOR": "1"})
    return env
