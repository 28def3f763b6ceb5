"""`coord dlq list | show | stats`: the dead-letter queue, read-only (re-drive and purge come later).

    coord dlq list --type TRAINING_COMPLETED --stage handle --since 1h
    coord dlq show 3f2c9a1e                 # a unique prefix of the dead letter id is enough
    coord dlq stats --json

`stats` groups by error fingerprint: the exception type plus its message with the parts that vary
from one failure to the next (UUIDs, hex ids, numbers, quoted strings) replaced, so that "timeout
after 31.2 s on 7f3a..." and "timeout after 29.8 s on 01bc..." count as one kind of failure.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

import click
import msgspec

from brokers.errors import TopicNotFound
from coordination.cli_context import CliSettings, run
from coordination.cli_format import CliError, format_ts, parse_time, print_json, print_table, stdout
from coordination.dlq import DeadLetter, DeadLetterQueue
from schemas.events import normalize_event_type

__all__ = ["dlq_group", "fingerprint", "normalize_message"]

STAGES = ("decode", "validate", "handle", "timeout", "crash", "publish")
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


def _event_type(letter: DeadLetter) -> str:
    return letter.event.event_type if letter.event is not None else "<undecodable>"


async def _letters(settings: CliSettings, **filters: Any) -> list[DeadLetter]:
    config = settings.router_config()
    async with settings.open_dlq_broker(config) as broker:
        try:
            return await DeadLetterQueue(broker, config.dlq_topic).list(**filters)
        except TopicNotFound:
            return []


def _summary(letter: DeadLetter) -> dict[str, Any]:
    return {"dead_letter_id": letter.dead_letter_id, "time": format_ts(letter.last_failure_at),
            "event_type": _event_type(letter), "stage": letter.stage, "group": letter.consumer_group,
            "handler": letter.handler, "attempts": letter.attempts, "error": fingerprint(letter)}


@click.group("dlq")
def dlq_group() -> None:
    """Inspect the dead-letter queue."""


@dlq_group.command("list")
@click.option("--type", "event_type", metavar="T", help="only dead letters of this event type")
@click.option("--group", metavar="G", help="only those of this consumer group")
@click.option("--stage", type=click.Choice(STAGES), help="only those that failed at this stage")
@click.option("--since", metavar="TIME", help="only those written since: 10m, 2h, ISO-8601, epoch seconds")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_command(settings: CliSettings, event_type: str | None, group: str | None, stage: str | None,
                 since: str | None, as_json: bool) -> None:
    """Dead letters, oldest first."""
    start: datetime | None = parse_time(since) if since is not None else None
    wanted = normalize_event_type(event_type, strict=False) if event_type is not None else None
    letters = run(_letters(settings, stage=stage, event_type=wanted, consumer_group=group, since=start))
    if as_json:
        print_json([_summary(letter) for letter in letters])
        return
    if not letters:
        stdout.print("no dead letters")
        return
    print_table(["id", "time (UTC)", "type", "stage", "group", "attempts", "error"],
                [(s["dead_letter_id"], s["time"], s["event_type"], s["stage"], s["group"], s["attempts"],
                  s["error"]) for s in map(_summary, letters)], title=f"{len(letters)} dead letter(s)")


@dlq_group.command("show")
@click.argument("dead_letter_id")
@click.option("--json", "as_json", is_flag=True, help="print the record as JSON")
@click.pass_obj
def show_command(settings: CliSettings, dead_letter_id: str, as_json: bool) -> None:
    """One dead letter, whole: envelope, error, traceback, attempts, where it came from."""
    matches = [d for d in run(_letters(settings)) if d.dead_letter_id.startswith(dead_letter_id)]
    if not matches:
        raise CliError(f"no dead letter {dead_letter_id!r}")
    if len({d.dead_letter_id for d in matches}) > 1:
        raise CliError(f"{dead_letter_id!r} matches {len(matches)} dead letters: give more of the id")
    letter = matches[-1]
    record = msgspec.to_builtins(letter)
    if as_json:
        print_json(record)
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
    """Counts by event type, stage, consumer group and error fingerprint."""
    letters = run(_letters(settings))
    counts = {
        "type": Counter(_event_type(d) for d in letters), "stage": Counter(d.stage for d in letters),
        "group": Counter(d.consumer_group or "-" for d in letters), "fingerprint": Counter(map(fingerprint, letters)),
    }
    if as_json:
        print_json({"total": len(letters), **{f"by_{k}": dict(v.most_common()) for k, v in counts.items()}})
        return
    stdout.print(f"{len(letters)} dead letter(s)")
    for name, counter in counts.items():
        if counter:
            print_table([name, "count"], counter.most_common(), title=f"by {name}")
