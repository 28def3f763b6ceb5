"""`coord sync`: ask nodes to sync data and watch them do it (coordination.sync_facade).

    coord sync games --to node-b --to node-c --board-type hex8 --num-players 2
    coord sync models --priority high --bandwidth-mbps 200        # every live sync peer
    coord sync all --no-wait                                       # return once the command is acknowledged
    coord sync npz --to node-b --json

Each target shows a row: requested -> started (files and bytes planned) -> completed (files, bytes,
rate) or failed / timeout / down with the reason; on a terminal the table updates in place, piped
output gets one line per change. The exit status is 0 when every target confirmed (or, with
--no-wait, when the command was sent and no target is known to be down), 1 otherwise, 3 when a broker
cannot be reached.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from coordination.cli_context import CliSettings, run
from coordination.cli_format import CliError, print_json, stdout
from coordination.event_router import UnifiedEventRouter
from coordination.sync_commands import NodeProgress
from coordination.sync_facade import SyncFacade
from coordination.sync_request import PRIORITIES, SYNC_DATA_TYPES, SyncRequest, SyncRequestError, SyncResponse
from coordination.sync_settings import SyncSettings

__all__ = ["sync_command"]


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"


def _row(p: NodeProgress) -> tuple[str, ...]:
    files = f"{p.files} (+{p.shared_files} shared)" if p.shared_files else str(p.files)
    if p.status == "started":
        return p.node_id, p.status, f"{p.planned_files} planned", f"{_size(p.planned_bytes)} planned", "", ""
    if p.status in ("requested", "down") and not p.files:
        return p.node_id, p.status, "", "", "", p.error
    rate = f"{p.bytes_transferred * 8 / p.duration_seconds / 1e6:.1f} Mbit/s" if p.duration_seconds > 0 else ""
    return p.node_id, p.status, files, _size(p.bytes_transferred), rate, p.error


class _Progress:
    """Per-node rows, shown live on a terminal or as one line per change when piped."""

    def __init__(self, live: bool) -> None:
        self.rows: dict[str, NodeProgress] = {}
        self.started = time.monotonic()
        self._live = Live(console=stdout, refresh_per_second=4, get_renderable=self.table) if live else None

    def table(self) -> Table:
        table = Table("node", "status", "files", "bytes", "rate", "detail", header_style="bold",
                      title=f"elapsed {time.monotonic() - self.started:.1f} s",
                      title_justify="left")
        for p in self.rows.values():
            table.add_row(*_row(p))
        return table

    def update(self, p: NodeProgress) -> None:
        self.rows[p.node_id] = NodeProgress(**p.as_dict())
        if self._live is None:
            stdout.print("  ".join(cell for cell in _row(p) if cell))

    def __enter__(self) -> _Progress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.__exit__(None, None, None)


async def _sync(settings: CliSettings, request: SyncRequest, progress: _Progress | None) -> SyncResponse:
    router = UnifiedEventRouter(settings.router_config(service_name="cli"))
    try:
        facade = SyncFacade(router, SyncSettings.from_env())
    except ValueError as exc:
        raise CliError(f"configuration: {exc}") from None
    try:
        await router.connect()  # an unreachable broker is a broker error (exit 3), not a failed sync
        await facade.reader()
        return await facade.sync(request, on_update=progress.update if progress is not None else None)
    finally:
        await facade.close()
        await router.stop()


@click.command("sync")
@click.argument("data_type", type=click.Choice(SYNC_DATA_TYPES))
@click.option("--to", "targets", multiple=True, metavar="NODE", help="a target node (repeatable; default: every "
              "live sync peer)")
@click.option("--from", "sources", multiple=True, metavar="NODE", help="pull only from this node (repeatable)")
@click.option("--exclude", multiple=True, metavar="NODE", help="neither target nor source (repeatable)")
@click.option("--board-type", metavar="B", help="only files of this board type (hex8, square19, ...)")
@click.option("--num-players", type=click.IntRange(min=1), metavar="N", help="only files of N-player games")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option("--bandwidth-mbps", type=click.FloatRange(min=0, min_open=True), metavar="MBPS",
              help="limit each target's transfers for this request (megabits per second)")
@click.option("--timeout-seconds", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="how long targets have to confirm")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait for every target's confirmation, or return once the command is acknowledged")
@click.option("--json", "as_json", is_flag=True, help="print the SyncResponse as JSON")
@click.pass_obj
def sync_command(settings: CliSettings, data_type: str, targets: tuple[str, ...], sources: tuple[str, ...],
                 exclude: tuple[str, ...], board_type: str | None, num_players: int | None, priority: str,
                 bandwidth_mbps: float | None, timeout_seconds: float, wait: bool, as_json: bool) -> None:
    """Sync DATA_TYPE (games, models, npz or all) to nodes and show each node's progress."""
    try:
        request = SyncRequest(data_type=data_type, targets=list(targets) or None, sources=list(sources) or None,
                              exclude_nodes=list(exclude), board_type=board_type, num_players=num_players,
                              priority=priority, bandwidth_limit_mbps=bandwidth_mbps,
                              timeout_seconds=timeout_seconds, require_confirmation=wait)
    except SyncRequestError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if as_json:
        response = run(_sync(settings, request, None))
        print_json(response.to_dict())
    else:
        with _Progress(live=sys.stdout.isatty()) as progress:
            response = run(_sync(settings, request, progress))
        _summary(response)
    if not response.success:
        raise CliError(f"sync {response.details.get('request_id', '')} failed: {'; '.join(response.errors)}")


def _summary(response: SyncResponse) -> None:
    details: dict[str, Any] = response.details
    confirmed = "confirmed" if details.get("confirmed") else "requested (not waiting for confirmation)"
    stdout.print(f"{response.backend_used.value}: {response.nodes_synced}/{len(details.get('nodes', {}))} node(s) "
                 f"{confirmed}, {_size(response.bytes_transferred)} in {response.duration_seconds:.1f} s "
                 f"(request {details.get('request_id', '')})")
