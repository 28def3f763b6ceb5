"""Log records as JSON lines or text, carrying the node, the event being handled and the daemon.

    configure_logging("json", level="info", node_id="gpu-3")      # the root logger, on stderr

Each record is stamped, in the context of the logging call, with:

    node_id                                    this node
    event_id, event_type, trace_id,            while a handler runs (coordination.handlers.current_event());
    correlation_id (when set)                  sync handlers in worker threads included
    daemon                                     inside a daemon's task or a task it started
                                               (coordination.daemon_supervisor.current_daemon())

`json`: one object per line: time (ISO-8601 UTC, milliseconds), level, logger, message, the fields
above and, with exc_info, `exception` (the formatted traceback). `text`: the classic
"time level logger: message" line with the same fields appended as key=value.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from coordination.daemon_supervisor import current_daemon
from coordination.handlers import current_event

__all__ = ["LOG_FORMATS", "ContextFilter", "JsonFormatter", "TextFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
_CONTEXT = "ringrift_context"  # the record attribute the filter writes and the formatters read


class ContextFilter(logging.Filter):
    """Stamps the node id, the current event and the current daemon on each record it passes."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _CONTEXT, context_fields(self.node_id))
        return True


def context_fields(node_id: str) -> dict[str, str]:
    """The fields the current context adds to a log record."""
    fields = {"node_id": node_id}
    event = current_event()
    if event is not None:
        fields.update(event_id=event.event_id, event_type=event.event_type, trace_id=event.trace_id)
        if event.correlation_id:
            fields["correlation_id"] = event.correlation_id
    daemon = current_daemon()
    if daemon is not None:
        fields["daemon"] = daemon
    return fields


def _context(record: logging.LogRecord) -> dict[str, str]:
    return dict(getattr(record, _CONTEXT, {}))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(), **_context(record)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _context(record).items() if k != "node_id")
        if not fields:
            return text
        head, newline, rest = text.partition("\n")  # a traceback stays below the line
        return f"{head} [{fields}]{newline}{rest}"


def configure_logging(log_format: str, *, level: str = "warning", node_id: str,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to `stream` (stderr) in `log_format` ("text" or "json"), at `level`
    and above; replaces the root logger's handlers. Returns the handler."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use {' or '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings become records too: every line on the stream has the format
    return handler
