"""Log lines as JSON or text: the node on every line; the event (id, type, trace) while a handler runs,
sync handlers in worker threads included; the daemon inside a daemon's task and the tasks it starts."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordination._deadlines import Deadlines
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig
from coordination.handlers import Subscriber, first_attempts
from coordination.log_format import JsonFormatter, configure_logging
from schemas.envelope import RouterEvent

log = logging.getLogger("ringrift.test")


class Capture:
    """The root logger writing to a string, as `coord node run` sets it up (node gpu-3, level info)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def use(self, log_format: str) -> None:
        configure_logging(log_format, level="info", node_id="gpu-3", stream=self.stream)

    def text(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text()]


@pytest.fixture
def captured() -> Iterator[Capture]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Capture()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_a_json_line_outside_any_handling(captured: Capture) -> None:
    captured.use("json")
    log.warning("disk %s", "full")
    [line] = captured.json()
    assert line["level"] == "WARNING" and line["logger"] == "ringrift.test" and line["message"] == "disk full"
    assert line["node_id"] == "gpu-3" and str(line["time"]).endswith("Z")
    assert "event_id" not in line and "daemon" not in line


async def test_json_lines_logged_in_async_and_sync_handlers_carry_the_event(captured: Capture) -> None:
    captured.use("json")
    event = RouterEvent.new("TRAINING_COMPLETED", {"config_key": "hex8_2p"}, correlation_id="batch-7")

    async def on_async(e: RouterEvent) -> None:
        log.info("async saw %s", e.event_type)

    def on_sync(e: RouterEvent) -> None:  # runs in a worker thread
        log.info("sync saw %s", e.event_type)

    for handler in (on_async, on_sync):
        assert await first_attempts([Subscriber(handler)], event, Deadlines(5.0)) is None
    log.info("after")
    first, second, after = captured.json()
    for line in (first, second):
        assert line["event_id"] == event.event_id and line["trace_id"] == event.trace_id
        assert line["event_type"] == "TRAINING_COMPLETED" and line["correlation_id"] == "batch-7"
    assert first["message"] == "async saw TRAINING_COMPLETED" and second["message"] == "sync saw TRAINING_COMPLETED"
    assert "event_id" not in after


def test_an_exception_is_in_the_json_line(captured: Capture) -> None:
    captured.use("json")
    try:
        raise ValueError("bad payload")
    except ValueError:
        log.exception("handling failed")
    [line] = captured.json()
    assert line["level"] == "ERROR" and "ValueError: bad payload" in str(line["exception"])


async def test_logs_inside_a_daemon_and_the_tasks_it_starts_name_the_daemon(captured: Capture, tmp_path: Path) -> None:
    captured.use("json")
    done = asyncio.Event()

    async def ledger() -> None:
        log.info("from the daemon")
        await asyncio.create_task(_child())
        done.set()
        await asyncio.Event().wait()

    manager = DaemonManager(DaemonManagerConfig(shutdown_timeout=1.0), router=Silent(), state_path=tmp_path / "s.json")
    manager.register_factory("GAME_LEDGER", ledger)
    assert await manager.start("GAME_LEDGER")
    await asyncio.wait_for(done.wait(), 5)
    await manager.shutdown(timeout=1.0, force=True)
    log.info("from the test")
    ours = [line for line in captured.json() if line["logger"] == "ringrift.test"]
    assert [(line["message"], line.get("daemon")) for line in ours] == [
        ("from the daemon", "game_ledger"), ("from a task it started", "game_ledger"), ("from the test", None)]


class Silent:
    """The manager's lifecycle announcements go nowhere."""

    async def publish(self, event_type: str, payload: Any = None, source: str = "", **options: Any) -> None:
        return None


async def _child() -> None:
    log.info("from a task it started")


async def test_text_lines_append_the_context(captured: Capture) -> None:
    captured.use("text")
    event = RouterEvent.new("MODEL_PROMOTED", {})

    async def handler(e: RouterEvent) -> None:
        log.warning("promoted")

    assert await first_attempts([Subscriber(handler)], event, Deadlines(5.0)) is None
    log.warning("plain")
    promoted, plain = captured.text()
    assert promoted.endswith(f"WARNING ringrift.test: promoted [event_id={event.event_id} event_type=MODEL_PROMOTED "
                             f"trace_id={event.trace_id}]")
    assert plain.endswith("WARNING ringrift.test: plain")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format 'xml': use text or json"):
        configure_logging("xml", node_id="n")


def test_the_json_formatter_alone_needs_no_context_filter() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %d", (5,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "hello 5"
