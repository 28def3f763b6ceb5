"""The dead-letter status store and its rules, without services: states and history, chains of
re-drives that failed again, deterministic re-drive ids, and records written by an older or newer
version of the store."""

from __future__ import annotations

import json
import uuid

from coordination.dlq import DeadLetter
from coordination.dlq_status import (
    HISTORY_LIMIT,
    SOURCE_PREFIX,
    LetterStatus,
    MemoryStatusStore,
    current_statuses,
    initial_status,
    redrive_event_id,
)
from schemas.envelope import RouterEvent
from tests.support import unique

T0 = 1_700_000_000.0


def letter(*, stage: str = "handle", source: str = "trainer", event: bool = True) -> DeadLetter:
    made = RouterEvent.new("TRAINING_COMPLETED", {"n": uuid.uuid4().hex}, source) if event else None
    return DeadLetter(dead_letter_id=str(uuid.uuid4()), stage=stage, event=made,  # type: ignore[arg-type]
                      raw=None if event else b"\xff", bus="data", consumer_group="n.router",
                      first_failure_at=T0, last_failure_at=T0)


def test_redrive_event_ids_are_the_same_for_one_try_and_differ_between_tries_and_letters() -> None:
    assert redrive_event_id("d1", 1) == redrive_event_id("d1", 1)
    assert len({redrive_event_id("d1", 1), redrive_event_id("d1", 2), redrive_event_id("d2", 1)}) == 3
    assert uuid.UUID(redrive_event_id("d1", 1)).version == 5


def test_a_new_letter_is_pending_and_one_without_a_readable_event_is_abandoned() -> None:
    statuses: dict[str, LetterStatus] = {}
    good, undecodable, invalid = letter(), letter(stage="decode", event=False), letter(stage="validate")
    assert initial_status(good, statuses, T0, "cli@h").state == "pending"
    for bad in (undecodable, invalid):
        status = initial_status(bad, statuses, T0, "cli@h")
        assert status.state == "abandoned" and "not re-drivable" in status.reason
    status = initial_status(good, statuses, T0, "cli@h")
    assert status.history == [{"at": T0, "state": "pending", "by": "cli@h", "note": ""}]
    assert status.root_id == good.dead_letter_id and status.event_id == good.event.event_id  # type: ignore[union-attr]


def test_a_redrive_that_failed_again_joins_its_parents_chain() -> None:
    parent = letter()
    child = letter(source=f"{SOURCE_PREFIX}{parent.dead_letter_id}")
    stored = {parent.dead_letter_id: LetterStatus(parent.dead_letter_id, state="redriven", tries=2,
                                                  last_try_at=T0 + 120, first_failure_at=T0 - 5,
                                                  root_id="root-1")}
    statuses, changed = current_statuses([parent, child], stored, T0 + 200, "dlq_retry@n")
    mine, theirs = statuses[child.dead_letter_id], statuses[parent.dead_letter_id]
    assert changed == {child.dead_letter_id, parent.dead_letter_id}
    assert (mine.parent_id, mine.root_id) == (parent.dead_letter_id, "root-1")
    assert (mine.tries, mine.last_try_at) == (2, T0 + 120)
    assert mine.first_failure_at == T0 - 5 and theirs.failed_again_as == child.dead_letter_id
    assert "failed again" in mine.history[0]["note"]
    assert current_statuses([parent, child], statuses, T0 + 300, "x")[1] == set()  # known: nothing to write


def test_history_keeps_the_last_moves_only() -> None:
    status = LetterStatus("d1")
    for n in range(HISTORY_LIMIT + 5):
        status.record("redriving" if n % 2 else "pending", T0 + n, "cli@h", f"move {n}")
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[-1]["note"] == f"move {HISTORY_LIMIT + 4}" and status.updated_at == T0 + HISTORY_LIMIT + 4


def test_status_records_from_an_older_or_newer_store_still_decode() -> None:
    older = json.dumps({"dead_letter_id": "d1", "state": "redriven", "tries": 1, "redriven_as": "e1"})
    status = LetterStatus.decode(older)  # written before history, redriven_by and target_group existed
    assert (status.state, status.redriven_as, status.history, status.redriven_by) == ("redriven", "e1", [], "")
    newer = json.dumps({**json.loads(status.encode()), "a_later_field": 7})
    assert LetterStatus.decode(newer) == status


async def test_memory_stores_of_one_name_share_statuses_and_locks() -> None:
    name = unique("store")
    one, two = MemoryStatusStore(name), MemoryStatusStore(name)
    status = LetterStatus("d1")
    status.record("purged", T0, "cli@h")
    await one.put(status)
    assert await two.get("d1") == status and await two.get("nope") is None
    assert list(await two.all()) == ["d1"]
    assert await one.lock("d1", 60) and not await two.lock("d1", 60)
    await one.unlock("d1")
    assert await two.lock("d1", 60)
