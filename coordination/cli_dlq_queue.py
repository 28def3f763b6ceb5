"""The dead-letter queue as the `coord dlq` commands read it: letters with their statuses, ids by
prefix, error fingerprints.

    view = await read_view(settings, config, store, event_type="MODEL_PROMOTED")
    view.letters                          # oldest first, one per dead letter id
    view.statuses[letter.dead_letter_id]  # stored, else the status the letter starts with (not written)
    by_ids(view.letters, ["3f2c9a1e"])    # unique prefixes; CliError for an unknown or ambiguous one

A fingerprint is the exception type plus its message with the parts that vary from one failure to
the next (UUIDs, hex ids, numbers, quoted strings) replaced, so that "timeout after 31.2 s on 7f3a..."
and "timeout after 29.8 s on 01bc..." count as one kind of failure.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from brokers.errors import TopicNotFound
from coordination.cli_context import CliSettings
from coordination.cli_format import CliError
from coordination.config import RouterConfig
from coordination.dlq import DeadLetter, DeadLetterQueue
from coordination.dlq_status import LetterStatus, StatusStore, current_statuses, status_store_for

__all__ = ["DlqView", "by_ids", "event_type_of", "fingerprint", "load_view", "normalize_message", "open_status_store",
           "read_view", "who"]

_VARIABLE = [
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def normalize_message(message: str) -> str:
    """The message with its varying parts replaced (first line only, at most 200 characters)."""
    text = (message.strip().splitlines() or [""])[0]
    for pattern, placeholder in _VARIABLE:
        text = pattern.sub(placeholder, text)
    return text[:200]


def fingerprint(letter: DeadLetter) -> str:
    """`ExceptionType: normalized message` (the stage stands in for a missing exception type)."""
    return f"{letter.exception_type or letter.stage}: {normalize_message(letter.message)}"


def event_type_of(letter: DeadLetter) -> str:
    return letter.event.event_type if letter.event is not None else "<undecodable>"


def who() -> str:
    """Who changes a status from the CLI (`redriven_by`, the history's "by")."""
    return f"cli@{socket.gethostname()}"


@dataclass
class DlqView:
    letters: list[DeadLetter]  # oldest first, one per dead letter id
    statuses: dict[str, LetterStatus]  # every letter's: stored, else as it starts (not written)
    new: set[str]  # statuses this read made (or parents it linked): `record_new` writes them

    def state(self, letter: DeadLetter) -> str:
        return self.statuses[letter.dead_letter_id].state

    async def record_new(self, store: StatusStore) -> None:
        """Write the statuses this read made, as DLQ_RETRY does on each pass (links must not be lost)."""
        for dead_letter_id in sorted(self.new):
            await store.put(self.statuses[dead_letter_id])


@contextlib.asynccontextmanager
async def open_status_store(config: RouterConfig) -> AsyncIterator[StatusStore]:
    store = status_store_for(config)
    try:
        yield store
    finally:
        await store.close()


async def read_view(settings: CliSettings, config: RouterConfig, store: StatusStore, **filters: Any) -> DlqView:
    """The letters (DeadLetterQueue.list filters) and every letter's status."""
    async with settings.open_dlq_broker(config) as broker:
        try:
            found = await DeadLetterQueue(broker, config.dlq_topic).list(**filters)
        except TopicNotFound:
            found = []
    letters = list({letter.dead_letter_id: letter for letter in found}.values())  # a producer retry's copy
    statuses, new = current_statuses(letters, await store.all(), time.time(), who())
    return DlqView(letters, statuses, new)


async def load_view(settings: CliSettings, **filters: Any) -> DlqView:
    """`read_view` for a read-only command (opens and closes the status store)."""
    config = settings.router_config()
    async with open_status_store(config) as store:
        return await read_view(settings, config, store, **filters)


def by_ids(letters: list[DeadLetter], prefixes: Sequence[str]) -> list[DeadLetter]:
    """The letters named by unique id prefixes, oldest first; CliError for an unknown or ambiguous one."""
    chosen: set[str] = set()
    for prefix in prefixes:
        matches = {d.dead_letter_id for d in letters if d.dead_letter_id.startswith(prefix)}
        if not matches:
            raise CliError(f"no dead letter {prefix!r}")
        if len(matches) > 1:
            raise CliError(f"{prefix!r} matches {len(matches)} dead letters: give more of the id")
        chosen |= matches
    return [d for d in letters if d.dead_letter_id in chosen]
