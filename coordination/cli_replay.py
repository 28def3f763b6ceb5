"""`coord replay`: print a time range of a bus, or deliver it again to one consumer group.

    coord replay --bus data --since 2h --until 1h --print --type TRAINING_COMPLETED
    coord replay --bus cross --since 30m --to-group daemon.EXPORT_TRIGGER --dry-run
    coord replay --bus cross --since 30m --to-group daemon.EXPORT_TRIGGER

`--to-group` reads the range (which event ids it holds), writes a replay mark for each of them in
the group's dedup store and counts the group's replay epoch up (brokers.dedup), waits until every
running member of the group has seen the new epoch (EPOCH_REFRESH_S), then moves the group's position
back to `--since` (Broker.rewind_group: Kafka commits offsets found by timestamp, Redis XGROUP SETID).
So the group's handlers run once more for each event of the range and for nothing else: the broker
hands over everything after the new position, and the dedup marks of events outside the range (or
of other types) drop them as handled already. Should the move fail, the replay marks are removed.

The dedup marks live in the Redis of RINGRIFT_REDIS_URL (the node's, or the one a cluster-wide group
shares) and last a day (RouterConfig.dedup_id_ttl_s): in a range older than that, every re-delivered
event runs again. A record that could not be decoded has no event id: it is dead-lettered again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

import click

from brokers.base import Broker, Record
from brokers.dedup import EPOCH_REFRESH_S, connect_dedup
from brokers.errors import GroupActive, GroupNotFound, TopicNotFound
from coordination.cli_context import BUSES, CliSettings, run
from coordination.cli_format import CliError, format_ts, print_json, print_table, stdout
from coordination.cli_format import parse_time as _parse_time
from coordination.cli_tail import event_json, event_line
from coordination.config import RouterConfig
from schemas.events import normalize_event_type

__all__ = ["replay_command"]


@dataclass
class ReplayReport:
    bus: str
    topic: str
    group: str
    since: str
    until: str | None
    types: list[str]
    dry_run: bool
    members: int  # members the group had when the replay began
    records: dict[str, int] = field(default_factory=dict)  # per partition ("stream" on Redis)
    events: int = 0  # events of the range (of the chosen types) that pass the group's dedup once more
    epoch: int | None = None  # the group's replay epoch (None: dry run)
    warning: str | None = None

    @property
    def total(self) -> int:
        return sum(self.records.values())


def _wanted(record: Record, types: frozenset[str]) -> bool:
    return record.event is not None and (not types or record.event.event_type in types)


async def _range(broker: Broker, topic: str, since: datetime, until: datetime | None) -> list[Record]:
    try:
        return [record async for record in broker.read(topic, since=since, until=until)]
    except TopicNotFound:
        return []


async def _print_range(settings: CliSettings, bus: str, since: datetime, until: datetime | None,
                       types: frozenset[str], as_json: bool) -> int:
    config = settings.router_config()
    async with settings.open_bus(config, bus) as broker:
        records = await _range(broker, settings.topic_of(config, bus), since, until)
    shown = [r for r in records if _wanted(r, types) or (r.event is None and not types)]
    for record in shown:
        print(event_json(bus, record) if as_json else event_line(bus, record), flush=True)
    return len(shown)


async def _to_group(settings: CliSettings, config: RouterConfig, report: ReplayReport, since: datetime,
                    until: datetime | None, types: frozenset[str], force: bool) -> None:
    bus, topic, group = report.bus, report.topic, report.group
    async with settings.open_bus(config, bus) as broker:
        try:
            lag = await broker.group_lag(topic, group)
        except TopicNotFound:
            raise CliError(f"nothing was ever published on the {bus} bus ({topic!r})") from None
        if not lag.members and all(p.position is None for p in lag.partitions):
            raise CliError(f"consumer group {group!r} has never read the {bus} bus ({topic!r}); a daemon's "
                           "group is daemon.<TYPE>, a router's <node_id>.<service_name>")
        report.members = lag.members
        if lag.members and not report.dry_run:
            _refuse(bus, group, lag.members, force)
        event_ids = [r.event.event_id for r in await _range(broker, topic, since, until)
                     if r.event is not None and _wanted(r, types)]
        report.events = len(event_ids)
        if report.dry_run:
            counts = await broker.rewind_group(topic, group, since=since, until=until, dry_run=True)
        elif not event_ids:
            what = f"events of type {', '.join(sorted(types))}" if types else "events"
            raise CliError(f"the range holds no {what} on the {bus} bus: nothing to replay")
        else:
            counts = await _move(broker, config, report, event_ids, since, until, force)
        report.records = {_label(p): n for p, n in sorted(counts.items(), key=lambda i: i[0] or 0)}


async def _move(broker: Broker, config: RouterConfig, report: ReplayReport, event_ids: list[str],
                since: datetime, until: datetime | None, force: bool) -> dict[int | None, int]:
    """Replay marks and epoch first, the group's position last; marks removed if the move fails."""
    store = connect_dedup(config.redis_url, config.namespace, report.group, window_s=config.dedup_window_s,
                          id_ttl_s=config.dedup_id_ttl_s, lease_s=config.dedup_id_ttl_s)
    try:
        report.epoch = await store.bump_epoch(event_ids)
        try:
            await asyncio.sleep(EPOCH_REFRESH_S + 0.2)  # running members empty their caches of settled ids
            return await broker.rewind_group(report.topic, report.group, since=since, until=until, force=force)
        except BaseException:
            await store.drop_replay(event_ids)
            raise
    except (GroupActive, GroupNotFound) as exc:  # the group changed since it was looked at
        raise CliError(str(exc)) from None
    finally:
        await store.close()


def _refuse(bus: str, group: str, members: int, force: bool) -> None:
    if bus == "cross":
        hint = "--force cannot help: " if force else ""
        raise CliError(f"consumer group {group!r} has {members} member(s) on Kafka; {hint}Kafka moves a group's "
                       "offsets only while it is empty: stop them (a member that died leaves after its session "
                       "timeout) and run this again")
    if not force:
        raise CliError(f"consumer group {group!r} has {members} member(s) reading the {bus} bus: stop them and "
                       "run this again, or move the group under them with --force")


def _label(partition: int | None) -> str:
    return "stream" if partition is None else str(partition)


def _show(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        print_json({**asdict(report), "total": report.total})
        return
    span = f"{report.since} .. {report.until} UTC" if report.until else f"since {report.since} UTC"
    kinds = ", ".join(report.types) if report.types else "all types"
    stdout.print(f"replay of the {report.bus} bus ({report.topic}) to group [bold]{report.group}[/bold], "
                 f"{span}, {kinds}", markup=True)
    if report.warning:
        stdout.print(f"[yellow]warning:[/yellow] {report.warning}")
    print_table(["partition" if report.bus == "cross" else "stream", "records"],
                list(report.records.items()))
    if report.dry_run:
        stdout.print(f"dry run: {report.total} record(s) would be delivered to {report.group!r} again and "
                     f"{report.events} event(s) would pass its dedup once more; nothing changed")
        if report.members:
            stdout.print(f"note: the group has {report.members} running member(s); stop them before the replay")
        return
    stdout.print(f"{report.total} record(s) will be delivered to {report.group!r} again; {report.events} "
                 f"event(s) pass its dedup once more (replay epoch {report.epoch})")
    if report.types:
        stdout.print("records of other types come again too and are dropped by the group's dedup as handled")


@click.command("replay")
@click.option("--bus", type=click.Choice(BUSES), required=True, help="the bus to replay")
@click.option("--since", required=True, metavar="TIME",
              help="start of the range: 10m, 2h, an ISO-8601 time (UTC unless it says) or epoch seconds")
@click.option("--until", metavar="TIME", help="end of the range, inclusive (default: now)")
@click.option("--type", "types", multiple=True, metavar="T", help="only events of this type (repeatable)")
@click.option("--print", "print_range", is_flag=True, help="print the range's events")
@click.option("--to-group", "group", metavar="GROUP",
              help="deliver the range again to this consumer group (daemon.<TYPE>, <node_id>.<service_name>)")
@click.option("--dry-run", is_flag=True, help="with --to-group: count per partition/stream, change nothing")
@click.option("--force", is_flag=True, help="with --to-group: move a Redis group while its members run "
              "(Kafka cannot: it moves the offsets of an empty group only)")
@click.option("--json", "as_json", is_flag=True, help="JSON output")
@click.pass_obj
def replay_command(settings: CliSettings, bus: str, since: str, until: str | None, types: tuple[str, ...],
                   print_range: bool, group: str | None, dry_run: bool, force: bool, as_json: bool) -> None:
    """Print a range of a bus, or deliver it again to one consumer group.

    --to-group moves the group's position back to --since (Kafka: committed offsets by timestamp;
    Redis: XGROUP SETID) and starts a replay epoch in the group's dedup store: each event of the
    range runs through the group's handlers once more, copies of it (other buses, redeliveries) do
    not, and neither do the events after --until that the broker hands over with them. Refused
    while the group has members (Redis: ones that read in the last 5 s) unless --force; on Kafka
    not even then.

    --type with --to-group: a broker re-delivers whole ranges, so the group's position moves for
    every type; only events of the given types pass its dedup again, the others are dropped as
    handled (their dedup marks last a day: older events of any type run again).
    """
    if print_range == (group is not None):
        raise click.UsageError("give either --print or --to-group GROUP")
    if print_range and (dry_run or force):
        raise click.UsageError("--dry-run and --force go with --to-group")
    start = _parse_time(since)
    end = _parse_time(until) if until is not None else None
    if end is not None and end < start:
        raise CliError(f"--until ({end.isoformat()}) is before --since ({start.isoformat()})", exit_code=2)
    wanted = frozenset(normalize_event_type(t, strict=False) for t in types)
    if print_range:
        count = run(_print_range(settings, bus, start, end, wanted, as_json))
        if not as_json:
            stdout.print(f"[dim]{count} event(s) on the {bus} bus from {start.isoformat()} to "
                         f"{end.isoformat() if end else 'now'}[/dim]")
        return
    assert group is not None
    config = settings.router_config()
    report = ReplayReport(bus=bus, topic=settings.topic_of(config, bus), group=group,
                          since=format_ts(start.timestamp()), until=format_ts(end.timestamp()) if end else None,
                          types=sorted(wanted), dry_run=dry_run, members=0)
    if time.time() - start.timestamp() > config.dedup_id_ttl_s:
        report.warning = (f"the range begins more than {config.dedup_id_ttl_s / 3600:g} h ago, beyond the life of "
                          "dedup marks: re-delivered events that old run again whatever --until and --type say")
    with stdout.status(f"reading the range and {'counting' if dry_run else 'moving'} {group!r} ..."):
        run(_to_group(settings, config, report, start, end, wanted, force))
    _show(report, as_json)

