"""An example plugin: a ledger of self-play results, kept by two custom consumer daemons.

    coord node run --profile coordinator --plugin examples.game_ledger

`GAME_LEDGER` reads the cross-node bus (Kafka): its consumer group spans the cluster, so each
`SELFPLAY_COMPLETE` is recorded once, by whichever node's member holds the event's partition.
`NODE_GAME_LEDGER` reads the node's data bus (its Redis): events published on this node, including
ones a non-Python client appended to the stream. Each handling appends one JSON line to the ledger
file (`RINGRIFT_LEDGER_DIR/<node>.jsonl`), so a reader can check that every event arrived once.

The board types the ledger accepts are read from `RINGRIFT_LEDGER_DIR/boards.txt` on each event
(default: hex8, square8, square19). An event for another board raises: the router retries it, then
dead-letters it; add the board to the file and re-drive it with `coord dlq redrive`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from coordination.daemon_types import DaemonType
from coordination.daemons.base import Bus, ConsumerDaemon
from schemas.envelope import RouterEvent

DEFAULT_BOARDS = ("hex8", "square8", "square19")


class UnknownBoard(ValueError):
    """The event names a board type the ledger is not configured for."""


def ledger_dir() -> Path:
    return Path(os.environ.get("RINGRIFT_LEDGER_DIR", "ledger"))


def known_boards(directory: Path) -> set[str]:
    try:
        lines = (directory / "boards.txt").read_text().split()
    except FileNotFoundError:
        return set(DEFAULT_BOARDS)
    return {line.strip() for line in lines if line.strip()}


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as ledger:
        ledger.write(line)


class GameLedger(ConsumerDaemon):
    daemon_type: ClassVar[str] = "GAME_LEDGER"
    subscriptions = ("SELFPLAY_COMPLETE",)
    buses: ClassVar[tuple[Bus, ...]] = ("cross",)

    async def handle(self, event: RouterEvent) -> None:
        directory = ledger_dir()
        config_key = str(event.payload.get("config_key", ""))
        board = config_key.rsplit("_", 1)[0]
        if board not in known_boards(directory):
            raise UnknownBoard(f"board {board!r} of {config_key!r} is not in {directory / 'boards.txt'}")
        line: dict[str, Any] = {"daemon": str(self.daemon_type), "node": self.config.node_id,
                                "event_id": event.event_id, "config_key": config_key,
                                "games": event.payload.get("games", 0), "source": event.source,
                                "handled_at": time.time()}
        await asyncio.to_thread(_append, directory / f"{self.config.node_id}.jsonl", json.dumps(line) + "\n")


class NodeGameLedger(GameLedger):
    daemon_type: ClassVar[str] = "NODE_GAME_LEDGER"
    buses: ClassVar[tuple[Bus, ...]] = ("data",)


def register(manager: Any) -> list[str]:
    """Plugin entry point (coordination.plugins): both ledgers, started with the node's profile."""
    for cls in (GameLedger, NodeGameLedger):
        manager.register_factory(cls.daemon_type, cls.factory(), depends_on=[DaemonType.EVENT_ROUTER],
                                 health_check_interval=10.0, auto_restart=True, max_restarts=5)
    return [GameLedger.daemon_type, NodeGameLedger.daemon_type]
