"""Restart accounting that survives a manager restart: counts, recent restarts, permanent failures.

A `RestartLedger` keeps, per daemon (keyed by its lower-case name):

* `count`: restarts charged against `max_restarts` (reset by `reset` or `clear`);
* `restarts`: timestamps of recent restarts (crash-loop window, "stable for an hour" rule);
* `permanently_failed`: when the daemon was given up on.

With a path it is saved after every change to a small JSON file, by default
`$RINGRIFT_COORDINATION_DIR/daemon_restarts.json` (`~/.ringrift/coordination` when unset), in the
original's shape `{timestamp, counts, restart_timestamps, permanently_failed}`. Everything expires
after 24 h: a file older than that is ignored on load, and so are older entries; a permanent
failure older than 24 h no longer counts. A file that cannot be read or written is logged, never
fatal: the ledger then lives in memory only.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["STATE_FILE_NAME", "STATE_TTL_SECONDS", "RestartLedger", "default_state_path"]

log = logging.getLogger(__name__)
STATE_TTL_SECONDS = 24 * 3600.0
STATE_FILE_NAME = "daemon_restarts.json"
_KEEP_RESTARTS = 64  # per daemon; enough for any window the manager asks about


def default_state_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$RINGRIFT_COORDINATION_DIR/daemon_restarts.json`, else under `~/.ringrift/coordination`; with
    RINGRIFT_NODE_ID set, `daemon_restarts.<node id>.json`, so that node agents sharing a machine (or
    a home directory) keep their own restart state."""
    env = os.environ if environ is None else environ
    base = env.get("RINGRIFT_COORDINATION_DIR", "").strip()
    directory = Path(base).expanduser() if base else Path.home() / ".ringrift" / "coordination"
    node = "".join(c if c.isalnum() or c in "-_." else "_" for c in env.get("RINGRIFT_NODE_ID", "").strip())
    return directory / (STATE_FILE_NAME.replace(".json", f".{node}.json") if node else STATE_FILE_NAME)


class RestartLedger:
    """Restart counts, restart times and permanent failures of the daemons of one manager."""

    def __init__(self, path: Path | None, now: float) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.restarts: dict[str, list[float]] = {}
        self.permanently_failed: dict[str, float] = {}
        if path is not None:
            self._load(path, now)

    # -- queries -----------------------------------------------------------------------------------

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def last_restart(self, name: str) -> float | None:
        times = self.restarts.get(name)
        return times[-1] if times else None

    def restarts_within(self, name: str, window: float, now: float) -> int:
        return sum(1 for ts in self.restarts.get(name, ()) if now - ts <= window)

    def is_permanently_failed(self, name: str, now: float) -> bool:
        since = self.permanently_failed.get(name)
        return since is not None and now - since < STATE_TTL_SECONDS

    # -- changes (each saved) -------------------------------------------------------------------------

    def record_restart(self, name: str, now: float) -> int:
        """Charge one restart; returns the new count."""
        self.counts[name] = self.count(name) + 1
        times = self.restarts.setdefault(name, [])
        times.append(now)
        del times[:-_KEEP_RESTARTS]
        self.save(now)
        return self.counts[name]

    def reset(self, name: str, now: float) -> None:
        """Forget the restart count (the restart times stay for the crash-loop window)."""
        if self.counts.pop(name, None) is not None:
            self.save(now)

    def mark_permanently_failed(self, name: str, now: float) -> None:
        self.permanently_failed[name] = now
        self.save(now)

    def clear(self, name: str, now: float) -> None:
        """Forget everything about `name`: count, restart times and permanent failure."""
        self.counts.pop(name, None)
        self.restarts.pop(name, None)
        self.permanently_failed.pop(name, None)
        self.save(now)

    # -- persistence ----------------------------------------------------------------------------------

    def to_json(self, now: float) -> dict[str, Any]:
        return {"timestamp": now, "counts": dict(self.counts),
                "restart_timestamps": {k: list(v) for k, v in self.restarts.items() if v},
                "permanently_failed": dict(self.permanently_failed)}

    def save(self, now: float) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".daemon_restarts.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.to_json(now), out)
            os.replace(tmp, self.path)  # atomic: a crash mid-write leaves the old file
        except OSError as exc:
            log.warning("could not save daemon restart state to %s: %s", self.path, exc)

    def _load(self, path: Path, now: float) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable daemon restart state %s: %s", path, exc)
            return
        try:
            if now - float(data.get("timestamp", 0)) > STATE_TTL_SECONDS:
                log.info("daemon restart state %s is older than 24 h: starting afresh", path)
                return
            fresh = {str(k): [float(t) for t in v if now - float(t) <= STATE_TTL_SECONDS]
                     for k, v in dict(data.get("restart_timestamps", {})).items()}
            self.restarts = {k: v for k, v in fresh.items() if v}
            self.counts = {str(k): int(v) for k, v in dict(data.get("counts", {})).items() if int(v) > 0}
            self.permanently_failed = {str(k): float(v) for k, v in dict(data.get("permanently_failed", {})).items()
                                       if now - float(v) < STATE_TTL_SECONDS}
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("ignoring malformed daemon restart state %s: %s", path, exc)
            self.counts, self.restarts, self.permanently_failed = {}, {}, {}
