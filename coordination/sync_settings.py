"""The sync control plane's settings: frozen data, read from the environment by `SyncSettings.from_env()`.

    RINGRIFT_DATA_DIR                  ./data   this node's data directory (as DATA_SERVER reads it)
    RINGRIFT_CLUSTER_SECRET            ""       the data plane's HMAC key (needed to pull)
    RINGRIFT_EPHEMERAL_NODE            false    this node may vanish: its syncs use the EPHEMERAL backend
                                                and durable nodes do not count on it as a source
    RINGRIFT_AUTO_SYNC_INTERVAL        60       seconds between AUTO_SYNC gossip cycles
    RINGRIFT_MIN_SYNC_INTERVAL         2        least seconds between cycles triggered by events
    RINGRIFT_AUTO_SYNC_DATA_TYPES      games,models,npz   what the gossip pulls (commands say their own)
    RINGRIFT_AUTO_SYNC_MAX_CONCURRENT  1        transfers a node runs at once (critical ones do not wait)
    RINGRIFT_SYNC_SCAN_INTERVAL        10       seconds between scans of the own data directory
    RINGRIFT_SYNC_ANNOUNCE_INTERVAL    30       a node's sync record is re-announced at least this often
    RINGRIFT_EPHEMERAL_SYNC_INTERVAL   5        seconds between EPHEMERAL_SYNC pushes
    RINGRIFT_SYNC_CONFIRM_TIMEOUT      60       seconds EPHEMERAL_SYNC waits for durable nodes to confirm
    RINGRIFT_DISTRIBUTION_TIMEOUT      300      seconds MODEL_/NPZ_DISTRIBUTION wait for their targets

A malformed value raises ValueError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coordination.daemons.data_server import DEFAULT_DATA_DIR
from coordination.sync_manifest import DATA_TYPES

__all__ = ["SyncSettings"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class SyncSettings:
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    secret: str = field(default="", repr=False)
    ephemeral: bool = False
    auto_sync_interval_s: float = 60.0
    min_sync_interval_s: float = 2.0
    auto_sync_data_types: tuple[str, ...] = DATA_TYPES
    max_concurrent: int = 1
    scan_interval_s: float = 10.0
    announce_interval_s: float = 30.0
    ephemeral_interval_s: float = 5.0
    confirm_timeout_s: float = 60.0
    distribution_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("auto_sync_interval_s", "scan_interval_s", "announce_interval_s", "ephemeral_interval_s",
                     "confirm_timeout_s", "distribution_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        if self.min_sync_interval_s < 0 or self.max_concurrent < 1:
            raise ValueError("min_sync_interval_s must be >= 0 and max_concurrent >= 1")
        unknown = set(self.auto_sync_data_types) - set(DATA_TYPES)
        if unknown:
            raise ValueError(f"RINGRIFT_AUTO_SYNC_DATA_TYPES: unknown {sorted(unknown)}; use {', '.join(DATA_TYPES)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> SyncSettings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"data_dir": Path(env.get("RINGRIFT_DATA_DIR", "").strip() or DEFAULT_DATA_DIR),
                                     "secret": env.get("RINGRIFT_CLUSTER_SECRET", "")}
        flag = env.get("RINGRIFT_EPHEMERAL_NODE", "").strip().lower()
        if flag not in _TRUE + _FALSE:
            raise ValueError(f"RINGRIFT_EPHEMERAL_NODE={flag!r}: use true or false")
        values["ephemeral"] = flag in _TRUE
        numbers = {"auto_sync_interval_s": "RINGRIFT_AUTO_SYNC_INTERVAL",
                   "min_sync_interval_s": "RINGRIFT_MIN_SYNC_INTERVAL",
                   "max_concurrent": "RINGRIFT_AUTO_SYNC_MAX_CONCURRENT",
                   "scan_interval_s": "RINGRIFT_SYNC_SCAN_INTERVAL",
                   "announce_interval_s": "RINGRIFT_SYNC_ANNOUNCE_INTERVAL",
                   "ephemeral_interval_s": "RINGRIFT_EPHEMERAL_SYNC_INTERVAL",
                   "confirm_timeout_s": "RINGRIFT_SYNC_CONFIRM_TIMEOUT",
                   "distribution_timeout_s": "RINGRIFT_DISTRIBUTION_TIMEOUT"}
        for name, var in numbers.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    values[name] = int(raw) if name == "max_concurrent" else float(raw)
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not a number") from None
        types = env.get("RINGRIFT_AUTO_SYNC_DATA_TYPES", "").strip()
        if types:
            values["auto_sync_data_types"] = tuple(t.strip() for t in types.split(",") if t.strip())
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
