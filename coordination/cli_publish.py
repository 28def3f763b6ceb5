"""`coord publish`: one event (or JSON lines with `--batch`) through the event router.

    coord publish TRAINING_COMPLETED --payload '{"config_key": "hex8_2p"}'
    echo '{"config_key": "hex8_2p"}' | coord publish TRAINING_COMPLETED -
    coord publish --batch < events.jsonl        # {"event_type": ..., "payload": {...}} per line

Prints the event id, the buses that acknowledged the record and the content hash. The router's
publish returns once every bus acknowledged but does not hand back the brokers' record ids, so the
buses are read from its per-bus `published` counters (and `spooled` when a spool took the record).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import click

from coordination.cli_context import CliSettings, run
from coordination.cli_format import CliError, print_json, stdout
from coordination.event_router import UnifiedEventRouter

__all__ = ["publish_command"]

_ROUTES = {"data": (True, False, False), "stage": (False, True, False), "cross": (False, False, True),
           "all": (True, True, True)}


@dataclass(frozen=True)
class _Request:
    event_type: str
    payload: dict[str, Any]
    key: str | None
    source: str


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _payload(payload: str | None, payload_file: str | None, dash: str | None, stdin: TextIO) -> dict[str, Any]:
    given = [p for p in (payload, payload_file, dash) if p is not None]
    if len(given) > 1:
        raise CliError("give the payload once: --payload JSON, --payload-file F or - (stdin)")
    if payload is not None:
        return _json_object(payload, "--payload")
    if payload_file is not None:
        try:
            with open(payload_file, encoding="utf-8") as handle:
                return _json_object(handle.read(), f"--payload-file {payload_file}")
        except OSError as exc:
            raise CliError(f"cannot read --payload-file {payload_file}: {exc.strerror}") from None
    if dash is not None:
        return _json_object(stdin.read(), "the payload on stdin")
    return {}


def _batch(stdin: TextIO, key: str | None, source: str) -> list[_Request]:
    """Every line parsed before anything is published: a bad line 7 must not leave lines 1-6 sent."""
    requests = []
    for number, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        item = _json_object(line, f"stdin line {number}")
        event_type = item.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise CliError(f"stdin line {number}: needs a string \"event_type\"")
        payload = item.get("payload", {})
        if not isinstance(payload, dict):
            raise CliError(f"stdin line {number}: \"payload\" must be a JSON object")
        requests.append(_Request(event_type, payload, item.get("key", key), item.get("source", source)))
    return requests


async def _publish_all(settings: CliSettings, requests: list[_Request], bus: str,
                       strict: bool) -> list[dict[str, Any]]:
    overrides = {"strict_validation": True} if strict else {}
    router = UnifiedEventRouter(settings.router_config(**overrides))
    data, stage, cross = _ROUTES[bus]
    results = []
    try:
        for request in requests:
            before = router.get_stats()
            event = await router.publish(request.event_type, request.payload, request.source, key=request.key,
                                         route_to_data_bus=data, route_to_stage_bus=stage,
                                         route_to_cross_process=cross)
            after = router.get_stats()
            acked = [b for b in ("data", "stage", "cross")
                     if after["published"].get(b, 0) > before["published"].get(b, 0)]
            spooled = after["spooled"] > before["spooled"]
            if not acked and not spooled:
                raise CliError(f"{event.event_type} went to no bus: --bus {bus} does not carry it"
                               + (" (it has no stage event)" if bus == "stage" else " (Kafka is off)"))
            results.append({"event_id": event.event_id, "event_type": event.event_type, "buses": acked,
                            "spooled": spooled, "content_hash": event.content_hash,
                            "trace_id": event.trace_id})
    finally:
        await router.stop()
    return results


def _show(result: dict[str, Any]) -> None:
    buses = ", ".join(result["buses"]) or "none"
    stdout.print(f"[bold]{result['event_type']}[/bold] event_id={result['event_id']}")
    stdout.print(f"  acknowledged on: {buses}" + ("  (spooled, sent when the broker is back)"
                                                   if result["spooled"] else ""))
    stdout.print(f"  content_hash:    {result['content_hash']}")


@click.command("publish")
@click.argument("event_type", required=False)
@click.argument("dash", required=False, metavar="[-]")
@click.option("--payload", help="the payload as a JSON object")
@click.option("--payload-file", type=click.Path(dir_okay=False), help="read the payload from a file")
@click.option("--bus", type=click.Choice(["data", "stage", "cross", "all"]), default="all", show_default=True)
@click.option("--key", help="partition key (default: the payload's config_key/config, else the type)")
@click.option("--source", default="coord", show_default=True, help="the event's source")
@click.option("--batch", is_flag=True, help="read JSON lines from stdin: {\"event_type\": ..., \"payload\": ...}")
@click.option("--strict", is_flag=True, help="refuse event types that are not in the catalog")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def publish_command(settings: CliSettings, event_type: str | None, dash: str | None, payload: str | None,
                    payload_file: str | None, bus: str, key: str | None, source: str, batch: bool,
                    strict: bool, as_json: bool) -> None:
    """Publish an event (prints its id, the buses that acknowledged it and its content hash)."""
    if dash is not None and dash != "-":
        raise CliError(f"unexpected argument {dash!r} (use - to read the payload from stdin)")
    if batch:
        if event_type is not None or payload is not None or payload_file is not None:
            raise CliError("--batch reads everything from stdin: give no TYPE or payload")
        requests = _batch(sys.stdin, key, source)
    else:
        if event_type is None:
            raise CliError("missing TYPE (or use --batch)")
        if event_type == "-":
            raise CliError("TYPE comes first: coord publish TYPE -")
        requests = [_Request(event_type, _payload(payload, payload_file, dash, sys.stdin), key, source)]
    results = run(_publish_all(settings, requests, bus, strict))
    if as_json:
        print_json(results if batch else results[0])
    else:
        for result in results:
            _show(result)
