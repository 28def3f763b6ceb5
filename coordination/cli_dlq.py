"""`coord dlq list | show | stats` (and `redrive | purge`, from coordination.cli_dlq_redrive): the
dead-letter queue and what was done about it.

    coord dlq list --type TRAINING_COMPLETED --stage handle --since 1h     # --status S, --all-states
    coord dlq show 3f2c9a1e                 # a unique prefix of the dead letter id is enough
    coord dlq stats --json                  # by type, stage, group, error fingerprint, status

Every letter has a status (coordination.dlq_status: pending, redriving, redriven, abandoned, purged),
shared with the DLQ_RETRY daemon; `show` prints it with its history. Purged letters are hidden from
`list` and `stats` unless asked for (`list --status purged`, `list --all-states`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

import click
import msgspec

from coordination.cli_context import CliSettings, run
from coordination.cli_dlq_queue import by_ids, event_type_of, fingerprint, load_view, normalize_message
from coordination.cli_dlq_redrive import purge_command, redrive_command
from coordination.cli_format import format_ts, parse_time, print_json, print_table, stdout
from coordination.dlq import DeadLetter
from coordination.dlq_status import STATES, LetterStatus
from schemas.events import normalize_event_type

__all__ = ["dlq_group", "fingerprint", "normalize_message"]

STAGES = ("decode", "validate", "handle", "timeout", "crash", "publish")


def _summary(letter: DeadLetter, status: LetterStatus) -> dict[str, Any]:
    return {"dead_letter_id": letter.dead_letter_id, "time": format_ts(letter.last_failure_at),
            "event_type": event_type_of(letter), "event_id": letter.event.event_id if letter.event else None,
            "stage": letter.stage, "status": status.state,
            "group": letter.consumer_group, "handler": letter.handler, "attempts": letter.attempts,
            "error": fingerprint(letter)}


@click.group("dlq")
def dlq_group() -> None:
    """Inspect, re-drive and purge the dead-letter queue."""


@dlq_group.command("list")
@click.option("--type", "event_type", metavar="T", help="only dead letters of this event type")
@click.option("--group", metavar="G", help="only those of this consumer group")
@click.option("--stage", type=click.Choice(STAGES), help="only those that failed at this stage")
@click.option("--since", metavar="TIME", help="only those written since: 10m, 2h, ISO-8601, epoch seconds")
@click.option("--status", "state", type=click.Choice(STATES), help="only those in this state")
@click.option("--all-states", is_flag=True, help="purged ones too")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_command(settings: CliSettings, event_type: str | None, group: str | None, stage: str | None,
                 since: str | None, state: str | None, all_states: bool, as_json: bool) -> None:
    """Dead letters, oldest first (purged ones hidden unless --status purged or --all-states)."""
    start = parse_time(since) if since is not None else None
    wanted = normalize_event_type(event_type, strict=False) if event_type is not None else None
    view = run(load_view(settings, stage=stage, event_type=wanted, consumer_group=group, since=start))
    rows = [_summary(d, view.statuses[d.dead_letter_id]) for d in view.letters]
    rows = [r for r in rows if r["status"] == state or (state is None and (all_states or r["status"] != "purged"))]
    if as_json:
        print_json(rows)
        return
    if not rows:
        stdout.print("no dead letters")
        return
    print_table(["id", "time (UTC)", "type", "stage", "status", "group", "attempts", "error"],
                [(r["dead_letter_id"], r["time"], r["event_type"], r["stage"], r["status"], r["group"],
                  r["attempts"], r["error"]) for r in rows], title=f"{len(rows)} dead letter(s)")


def _print_status(status: LetterStatus) -> None:
    rows = [("state", status.state + (f" ({status.reason})" if status.reason else "")),
            ("tries", f"{status.tries}" + (f", last {format_ts(status.last_try_at)}" if status.last_try_at else ""))]
    if status.redriven_as:
        rows.append(("re-driven as", f"{status.redriven_as} to {status.target_group or 'every group'}"
                     + (f" by {status.redriven_by}" if status.redriven_by else "")))
    links = [f"{name} {value}" for name, value in (("parent", status.parent_id), ("failed again as",
             status.failed_again_as)) if value]
    if status.root_id and status.root_id != status.dead_letter_id:
        links.append(f"chain root {status.root_id}")
    if links:
        rows.append(("chain", ", ".join(links)))
    stdout.print("[bold]status[/bold]")
    for name, value in rows:
        stdout.print(f"  {name + ':':<16}{value}", markup=False)
    if status.history:
        print_table(["time (UTC)", "state", "by", "note"],
                    [(format_ts(h["at"]), h["state"], h["by"], h["note"]) for h in status.history], title="history")


@dlq_group.command("show")
@click.argument("dead_letter_id")
@click.option("--json", "as_json", is_flag=True, help="print the record (and its status) as JSON")
@click.pass_obj
def show_command(settings: CliSettings, dead_letter_id: str, as_json: bool) -> None:
    """One dead letter, whole: envelope, error, traceback, attempts, where it came from, its status."""
    view = run(load_view(settings))
    [letter] = by_ids(view.letters, [dead_letter_id])
    status = view.statuses[letter.dead_letter_id]
    record = msgspec.to_builtins(letter)
    if as_json:
        print_json({**record, "status": asdict(status)})
        return
    stdout.print(f"[bold]dead letter {letter.dead_letter_id}[/bold]")
    rows = [("stage", letter.stage), ("error", f"{letter.exception_type}: {letter.message}".lstrip(": ")),
            ("fingerprint", fingerprint(letter)), ("attempts", letter.attempts),
            ("first failure", format_ts(letter.first_failure_at)), ("last failure", format_ts(letter.last_failure_at)),
            ("handler", letter.handler), ("consumer group", letter.consumer_group), ("node", letter.node_id),
            ("from", f"{letter.bus} bus, {letter.topic} record {letter.record_id}"
             + (f" partition {letter.partition}" if letter.partition is not None else ""))]
    for name, value in rows:
        stdout.print(f"  {name + ':':<16}{value}", markup=False)
    _print_status(status)
    if letter.event is not None:
        stdout.print("[bold]envelope[/bold]")
        print_json(record["event"])
    elif letter.raw is not None:
        stdout.print("[bold]raw record[/bold] (undecodable)")
        print(letter.raw.decode("utf-8", errors="replace"))
    if letter.traceback:
        stdout.print("[bold]traceback[/bold]")
        print(letter.traceback.rstrip())


@dlq_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def stats_command(settings: CliSettings, as_json: bool) -> None:
    """Counts by event type, stage, consumer group, error fingerprint and status (purged ones apart)."""
    view = run(load_view(settings))
    letters = [d for d in view.letters if view.state(d) != "purged"]
    purged = len(view.letters) - len(letters)
    counts = {
        "type": Counter(event_type_of(d) for d in letters), "stage": Counter(d.stage for d in letters),
        "group": Counter(d.consumer_group or "-" for d in letters), "fingerprint": Counter(map(fingerprint, letters)),
        "status": Counter(view.state(d) for d in letters),
    }
    if as_json:
        print_json({"total": len(letters), "purged": purged,
                    **{f"by_{k}": dict(v.most_common()) for k, v in counts.items()}})
        return
    stdout.print(f"{len(letters)} dead letter(s)" + (f" (and {purged} purged, not counted)" if purged else ""))
    for name, counter in counts.items():
        if counter:
            print_table([name, "count"], counter.most_common(), title=f"by {name}")


for _command in (redrive_command, purge_command):
    dlq_group.add_command(_command)
