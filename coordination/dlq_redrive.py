"""Re-driving dead letters by hand (`coord dlq redrive`): which publishes to make, and making them so
that an interruption anywhere loses nothing and delivers nothing twice.

    plans, skipped = plan_redrives(letters, statuses, to_group=None)
    for plan in plans:
        await run_redrive(plan, router, store, statuses, by="cli@host", now=time.time())

`plan_redrives` keeps the letters that can be re-driven (state pending or abandoned, with a readable
event; redriven, purged and undecodable ones are skipped with the reason) and makes one `RedrivePlan`
per (event, target group, bus): letters of one event that failed in one group (several handlers) are
re-driven by one publish, since the group runs all its handlers for it. The target group is the one
that failed (`--to-group` overrides; a letter without a group, a refused spooled publish, goes to every
group), so no other group handles the event again.

`run_redrive` writes, per letter, `redriving` with the event id it is about to publish BEFORE the
publish, then publishes (parent = the dead event, same trace and correlation ids, `target_group`), then
writes `redriven`. The id is `redrive_event_id(first letter, try)`; a plan for a letter found in state
`redriving` reuses the id written there. So a run killed after the publish and before `redriven` is
repeated with the same id, and the target group's dedup drops the second copy; a run killed before
the publish publishes it now. A failed publish leaves the letters `redriving` (to be resumed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordination.dlq import DeadLetter
from coordination.dlq_status import (
    NOT_REDRIVABLE_STAGES,
    SOURCE_PREFIX,
    LetterStatus,
    StatusStore,
    redrive_event_id,
)

__all__ = ["RedrivePlan", "plan_redrives", "run_redrive", "skip_reason"]


@dataclass
class RedrivePlan:
    """One publish re-driving `letters` (one event) to `target_group` (None: every group) on `bus`."""

    letters: list[DeadLetter]
    target_group: str | None
    bus: str
    event_id: str
    try_number: int
    resumed: bool  # an earlier run wrote the intent (state redriving) and did not finish

    @property
    def event_type(self) -> str:
        event = self.letters[0].event
        assert event is not None
        return event.event_type


def skip_reason(letter: DeadLetter, status: LetterStatus) -> str | None:
    """Why this letter is not re-driven, or None when it is."""
    if status.state == "redriven":
        return f"already redriven as {status.redriven_as} by {status.redriven_by or '?'}"
    if status.state == "purged":
        return "purged"
    if letter.event is None or letter.stage in NOT_REDRIVABLE_STAGES:
        return f"not re-drivable: stage {letter.stage} ({'no readable event' if letter.event is None else 'invalid'})"
    return None


def plan_redrives(letters: list[DeadLetter], statuses: dict[str, LetterStatus], *,
                  to_group: str | None = None) -> tuple[list[RedrivePlan], list[tuple[DeadLetter, str]]]:
    """The publishes re-driving `letters` (oldest first), and the letters skipped with why."""
    grouped: dict[tuple[str, str | None, str], list[DeadLetter]] = {}
    skipped: list[tuple[DeadLetter, str]] = []
    for letter in letters:
        reason = skip_reason(letter, statuses[letter.dead_letter_id])
        if reason is not None:
            skipped.append((letter, reason))
            continue
        assert letter.event is not None
        target = to_group or letter.consumer_group or None
        grouped.setdefault((letter.event.event_id, target, letter.bus), []).append(letter)
    plans = []
    for (_, target, bus), members in grouped.items():
        begun = [statuses[x.dead_letter_id] for x in members
                 if statuses[x.dead_letter_id].state == "redriving" and statuses[x.dead_letter_id].redriven_as]
        if begun:
            plans.append(RedrivePlan(members, target, bus, begun[0].redriven_as, begun[0].tries, resumed=True))
        else:
            try_number = statuses[members[0].dead_letter_id].tries + 1
            plans.append(RedrivePlan(members, target, bus, redrive_event_id(members[0].dead_letter_id, try_number),
                                     try_number, resumed=False))
    return plans, skipped


async def run_redrive(plan: RedrivePlan, router: Any, store: StatusStore, statuses: dict[str, LetterStatus], *,
                      by: str, now: float) -> None:
    """Intent, publish, done (see the module docstring). `router` is a UnifiedEventRouter; the
    publish's errors propagate with the letters left `redriving`."""
    target = plan.target_group or "every group"
    members = [statuses[x.dead_letter_id] for x in plan.letters]
    for status in members:
        if status.state != "redriving" or status.redriven_as != plan.event_id:
            status.tries, status.last_try_at = plan.try_number, now
            status.redriven_as, status.target_group = plan.event_id, plan.target_group or ""
            status.record("redriving", now, by, f"try {plan.try_number}: publishing {plan.event_id} to {target}")
            await store.put(status)
    first = plan.letters[0]
    dead = first.event
    assert dead is not None
    try:
        await router.publish(
            dead.event_type, dead.payload, f"{SOURCE_PREFIX}{first.dead_letter_id}",
            route_to_data_bus=plan.bus in ("data", ""), route_to_stage_bus=plan.bus in ("stage", ""),
            route_to_cross_process=plan.bus in ("cross", ""), event_id=plan.event_id,
            parent_event_id=dead.event_id, trace_id=dead.trace_id or None, correlation_id=dead.correlation_id,
            target_group=plan.target_group)
    except Exception as exc:
        for status in members:
            status.reason = f"{type(exc).__name__}: {exc}"
            await store.put(status)
        raise
    for status in members:
        status.redriven_by, status.reason = by, ""
        status.record("redriven", now, by, f"{'resumed: ' if plan.resumed else ''}published {plan.event_id} "
                                           f"to {target}")
        await store.put(status)
