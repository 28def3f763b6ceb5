"""`coord tail`: print a bus's events from a point in time and, with `--follow`, as they come.

    coord tail --bus cross --since 10m --type TRAINING_COMPLETED
    coord tail --follow --json            # one JSON envelope per line

It never joins a consumer group, so it cannot take work from a daemon: it only calls the broker's
group-less `read` (Redis XRANGE; Kafka a consumer without group_id, assigned and seeked). `--follow`
polls `read(since=...)` again from slightly before the newest record seen and skips the record ids
it printed already: the look-back catches Kafka records that arrive late with an older timestamp
(another partition, another producer's clock).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import click
import msgspec

from brokers.base import Broker, Record
from brokers.errors import TopicNotFound
from coordination.cli_context import BUSES, CliSettings, run
from coordination.cli_format import format_ts, parse_time, stdout
from schemas.envelope import RouterEvent
from schemas.events import normalize_event_type

__all__ = ["event_json", "event_line", "tail_command"]

POLL_INTERVAL_S = 0.5
LOOKBACK_S = 5.0


def event_line(bus: str, record: Record) -> str:
    event = record.event
    if event is None:
        return f"{format_ts(record.timestamp)}  {bus:<5}  {record.record_id}  <undecodable: {record.error}>"
    payload = json.dumps(event.payload, separators=(",", ":"), default=str)
    return (f"{format_ts(record.timestamp)}  {bus:<5}  {record.record_id}  {event.event_type}  "
            f"id={event.event_id}  source={event.source or '-'}  {payload}")


def event_json(bus: str, record: Record) -> str:
    body: dict[str, object] = {"bus": bus, "record_id": record.record_id, "timestamp": record.timestamp,
                               "key": record.key}
    if record.event is not None:
        body["event"] = _envelope(record.event)
    else:
        body["error"] = record.error
    return json.dumps(body, default=str)


def _envelope(event: RouterEvent) -> dict[str, object]:
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


async def _read(broker: Broker, topic: str, since: datetime | None) -> list[Record]:
    try:
        return [record async for record in broker.read(topic, since=since)]
    except TopicNotFound:
        return []  # nothing was ever published on this bus (in this namespace)


async def _tail(settings: CliSettings, bus: str, types: frozenset[str], since: datetime | None,
                follow: bool, as_json: bool) -> None:
    config = settings.router_config()
    topic = settings.topic_of(config, bus)

    def show(record: Record) -> None:
        if types and (record.event is None or record.event.event_type not in types):
            return
        print(event_json(bus, record) if as_json else event_line(bus, record), flush=True)

    async with settings.open_bus(config, bus) as broker:
        seen: dict[str, float] = {}  # record id -> timestamp, for the look-back window
        newest = since.timestamp() if since is not None else time.time()
        if since is not None:
            for record in await _read(broker, topic, since):
                seen[record.record_id] = record.timestamp
                newest = max(newest, record.timestamp)
                show(record)
        while follow:
            await asyncio.sleep(POLL_INTERVAL_S)
            horizon = newest - LOOKBACK_S
            for record in await _read(broker, topic, datetime.fromtimestamp(horizon, UTC)):
                if record.record_id in seen:
                    continue
                seen[record.record_id] = record.timestamp
                newest = max(newest, record.timestamp)
                show(record)
            seen = {rid: ts for rid, ts in seen.items() if ts >= horizon}


@click.command("tail")
@click.option("--bus", type=click.Choice(BUSES), default=None,
              help="which bus to read (default: cross, or data when Kafka is off)")
@click.option("--type", "types", multiple=True, metavar="T", help="only this event type (repeatable)")
@click.option("--since", metavar="TIME", help="from this time: 10m, 2h, an ISO-8601 time or epoch seconds "
              "(default: 10m, or now with --follow)")
@click.option("--follow", "-f", is_flag=True, help="keep printing events as they come (Ctrl-C stops)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_obj
def tail_command(settings: CliSettings, bus: str | None, types: tuple[str, ...], since: str | None,
                 follow: bool, as_json: bool) -> None:
    """Print events from a bus without joining any consumer group."""
    start = parse_time(since) if since is not None else (None if follow else parse_time("10m"))
    wanted = frozenset(normalize_event_type(t, strict=False) for t in types)
    chosen = bus or ("cross" if settings.router_config().kafka_enabled else "data")
    if not as_json and not follow:
        stdout.print(f"[dim]{chosen} bus since {start.isoformat() if start else 'now'}[/dim]")
    try:
        run(_tail(settings, chosen, wanted, start, follow, as_json))
    except KeyboardInterrupt:
        pass
