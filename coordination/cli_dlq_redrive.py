"""`coord dlq redrive | purge`: act on dead letters, recording what was done in their status.

    coord dlq redrive 3f2c9a1e 77b0         # unique id prefixes
    coord dlq redrive --type MODEL_PROMOTED --fingerprint "ValueError: bad checkpoint"
    coord dlq redrive --all --dry-run       # what would be re-driven; nothing changes
    coord dlq redrive --all --to-group trainer-2.router     # default: the group that failed each letter
    coord dlq purge --older-than 7d         # or ID ... | --status redriven; --dry-run

`redrive` takes pending and abandoned letters with a readable event and re-publishes each once to
the group that failed it (coordination.dlq_redrive: the status is written before and after each
publish, so running it again, even after it was killed halfway, delivers each event once). A letter
already redriven, or purged, is skipped and said so. `--fingerprint F` takes the letters whose
fingerprint (see `coord dlq stats`) starts with F. On a terminal a progress bar shows the run.
`purge` marks letters purged: `list` and `stats` hide them and `redrive` skips them; the records
stay on the dead-letter topic.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from brokers.errors import BrokerError
from coordination.cli_context import CliSettings, run
from coordination.cli_dlq_queue import DlqView, by_ids, event_type_of, fingerprint, open_status_store, read_view, who
from coordination.cli_format import CliError, parse_duration, print_json, stdout
from coordination.dlq import DeadLetter
from coordination.dlq_redrive import RedrivePlan, plan_redrives, run_redrive
from coordination.dlq_status import STATES
from coordination.event_router import UnifiedEventRouter
from schemas.events import normalize_event_type

__all__ = ["purge_command", "redrive_command"]


def _select(view: DlqView, ids: tuple[str, ...], event_type: str | None,
            fingerprint_prefix: str | None) -> list[DeadLetter]:
    if ids:
        return by_ids(view.letters, ids)
    wanted = normalize_event_type(event_type, strict=False) if event_type is not None else None
    found = [d for d in view.letters if view.state(d) != "purged"
             and (wanted is None or event_type_of(d) == wanted)
             and (fingerprint_prefix is None or fingerprint(d).startswith(fingerprint_prefix))]
    if not found:
        given = [f"{flag} {value!r}" for flag, value in (("--type", wanted), ("--fingerprint", fingerprint_prefix))
                 if value]
        raise CliError(f"no dead letter matches {' '.join(given)}" if given else "no dead letters (not purged)")
    return found


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (lines printed meanwhile appear above it); nothing otherwise."""
    if not show:
        yield lambda _: None
        return
    columns = (TextColumn("re-driving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stdout, transient=True) as progress:
        task = progress.add_task("re-drive", total=total)
        yield lambda done: progress.advance(task, done)


def _rows(plan: RedrivePlan) -> list[dict[str, Any]]:
    return [{"dead_letter_id": d.dead_letter_id, "event_type": plan.event_type, "bus": plan.bus,
             "target_group": plan.target_group, "event_id": plan.event_id, "resumed": plan.resumed}
            for d in plan.letters]


def _line(verb: str, row: dict[str, Any]) -> None:
    stdout.print(f"{verb:<16}{row['dead_letter_id']}  {row['event_type']} to {row['target_group'] or 'every group'}"
                 f" as {row['event_id']}", markup=False)


async def _redrive(settings: CliSettings, ids: tuple[str, ...], event_type: str | None,
                   fingerprint_prefix: str | None, to_group: str | None, dry_run: bool,
                   quiet: bool) -> dict[str, Any]:
    config = settings.router_config()
    async with open_status_store(config) as store:
        view = await read_view(settings, config, store)
        plans, skipped = plan_redrives(_select(view, ids, event_type, fingerprint_prefix), view.statuses,
                                       to_group=to_group)
        report: dict[str, Any] = {"dry_run": dry_run,
                                  "skipped": [{"dead_letter_id": d.dead_letter_id, "reason": r} for d, r in skipped]}
        for row in [] if quiet else report["skipped"]:
            stdout.print(f"{'skipped':<16}{row['dead_letter_id']}  {row['reason']}", markup=False)
        if dry_run:
            return {**report, "would_redrive": [row for plan in plans for row in _rows(plan)]}
        report["redriven"] = []
        await view.record_new(store)
        router, total, by = UnifiedEventRouter(config), sum(len(p.letters) for p in plans), who()
        try:
            with _progress(total, stdout.is_terminal and not quiet and total > 1) as advance:
                for plan in plans:
                    try:
                        await run_redrive(plan, router, store, view.statuses, by=by, now=time.time())
                    except BrokerError as exc:
                        raise CliError(f"re-drive stopped at dead letter {plan.letters[0].dead_letter_id} "
                                       f"({len(report['redriven'])} of {total} re-driven): {exc}; run the same "
                                       "command again to resume", exit_code=3) from None
                    report["redriven"] += _rows(plan)
                    for row in [] if quiet else _rows(plan):
                        _line("resumed" if plan.resumed else "redriven", row)
                    advance(len(plan.letters))
        finally:
            await router.stop()
    return report


@click.command("redrive")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--type", "event_type", metavar="T", help="the letters of this event type")
@click.option("--fingerprint", "fingerprint_prefix", metavar="F", help="the letters whose fingerprint starts with F")
@click.option("--all", "everything", is_flag=True, help="every letter that is not purged")
@click.option("--to-group", metavar="G", help="re-drive to this consumer group (default: the group that failed)")
@click.option("--dry-run", is_flag=True, help="say what would be re-driven; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def redrive_command(settings: CliSettings, ids: tuple[str, ...], event_type: str | None,
                    fingerprint_prefix: str | None, everything: bool, to_group: str | None, dry_run: bool,
                    as_json: bool) -> None:
    """Re-publish dead letters, once each, to the group that failed them."""
    selectors = [flag for flag, given in (("--type", event_type), ("--fingerprint", fingerprint_prefix),
                                          ("--all", everything)) if given]
    if not ids and not selectors:
        raise click.UsageError("say which dead letters: ID ..., --type T, --fingerprint F or --all")
    if (ids and selectors) or (everything and len(selectors) > 1):
        raise click.UsageError("give IDs, or --type/--fingerprint, or --all: not together")
    if to_group is not None and not to_group.strip():
        raise click.UsageError("--to-group needs a consumer group name")
    report = run(_redrive(settings, ids, event_type, fingerprint_prefix, to_group, dry_run, as_json))
    if as_json:
        print_json(report)
        return
    skipped = len(report["skipped"])
    if dry_run:
        for row in report["would_redrive"]:
            _line("would re-drive", row)
        stdout.print(f"dry run: {len(report['would_redrive'])} would be re-driven, {skipped} skipped; nothing changed")
    elif report["redriven"]:
        stdout.print(f"{len(report['redriven'])} re-driven, {skipped} skipped")
    else:
        stdout.print(f"nothing to re-drive ({skipped} skipped)")


async def _purge(settings: CliSettings, ids: tuple[str, ...], older_than_s: float | None, state: str | None,
                 dry_run: bool) -> dict[str, Any]:
    config = settings.router_config()
    async with open_status_store(config) as store:
        view = await read_view(settings, config, store)
        if ids:
            chosen = by_ids(view.letters, ids)
        else:
            cutoff = time.time() - older_than_s if older_than_s is not None else None
            chosen = [d for d in view.letters if view.state(d) != "purged" and state in (None, view.state(d))
                      and (cutoff is None or d.last_failure_at < cutoff)]
            if not chosen:
                given = [f"--status {state}" if state else "", "--older-than" if older_than_s is not None else ""]
                raise CliError(f"no dead letter matches {' '.join(g for g in given if g)}")
        purge = [d.dead_letter_id for d in chosen if view.state(d) != "purged"]
        if not dry_run:
            await view.record_new(store)
            now, by = time.time(), who()
            for dead_letter_id in purge:
                status = view.statuses[dead_letter_id]
                status.record("purged", now, by, f"was {status.state}")
                await store.put(status)
    return {"dry_run": dry_run, "would_purge" if dry_run else "purged": purge,
            "already_purged": [d.dead_letter_id for d in chosen if d.dead_letter_id not in purge]}


@click.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--older-than", metavar="AGE", help="the letters whose last failure is older: 7d, 12h, ...")
@click.option("--status", "state", type=click.Choice([s for s in STATES if s != "purged"]),
              help="the letters in this state")
@click.option("--dry-run", is_flag=True, help="say what would be purged; change nothing")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def purge_command(settings: CliSettings, ids: tuple[str, ...], older_than: str | None, state: str | None,
                  dry_run: bool, as_json: bool) -> None:
    """Mark dead letters purged: hidden from list and stats, never re-driven (the records stay)."""
    if not ids and older_than is None and state is None:
        raise click.UsageError("say which dead letters: ID ..., --older-than AGE or --status S")
    if ids and (older_than is not None or state is not None):
        raise click.UsageError("give IDs, or --older-than/--status: not together")
    older_than_s = parse_duration(older_than).total_seconds() if older_than is not None else None
    report = run(_purge(settings, ids, older_than_s, state, dry_run))
    if as_json:
        print_json(report)
        return
    done = report["would_purge" if dry_run else "purged"]
    for dead_letter_id in done:
        stdout.print(f"{'would purge' if dry_run else 'purged':<16}{dead_letter_id}", markup=False)
    for dead_letter_id in report["already_purged"]:
        stdout.print(f"{'skipped':<16}{dead_letter_id}  already purged", markup=False)
    stdout.print(f"dry run: {len(done)} would be purged; nothing changed" if dry_run else f"{len(done)} purged")
