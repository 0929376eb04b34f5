"""Logging for the project's own processes: JSON lines for collectors, readable lines for people.

On a terminal a person reads the output, so records are readable lines; anywhere else (a pod's
stdout/stderr, which the container runtime writes to /var/log/pods, or a file) a log collector
reads it, so each record is one JSON object on one line:

    {"time": "2026-01-02T03:04:05.678Z", "level": "info", "logger": "devloop.gateway.access",
     "message": "request", "request_id": "...", "method": "POST", "path": "/v1/completions",
     "status": 200, "duration_ms": 12.3, "cache": "HIT"}

`time` is RFC 3339 in UTC with milliseconds and a literal `Z` (TIME_FORMAT_FLUENT_BIT is the same
layout in Fluent Bit's strptime terms; kustomize/components/logging parses exactly this).
Fields passed with `extra=` become top-level keys. DEVLOOP_LOG_FORMAT=json or text overrides the
terminal test (Tilt's log pane is no terminal, but a person reads it: set text there).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

FORMAT_ENV = "DEVLOOP_LOG_FORMAT"
LEVEL_ENV = "DEVLOOP_LOG_LEVEL"
JSON = "json"
TEXT = "text"
FORMATS = (JSON, TEXT)
# The `time` layout, in Fluent Bit's strptime terms (%L: fractional seconds).
TIME_FORMAT_FLUENT_BIT = "%Y-%m-%dT%H:%M:%S.%LZ"
# Keys every JSON record has, in this order; `extra=` fields follow.
REQUIRED_KEYS = ("time", "level", "logger", "message")

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


def utc_timestamp(created: float) -> str:
    """RFC 3339, UTC, milliseconds: 2026-01-02T03:04:05.678Z."""
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...`; a dict field becomes an indented table."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{utc_timestamp(record.created)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}"
        )
        tables = []
        for key, value in extra_fields(record).items():
            if isinstance(value, Mapping):
                width = max((len(str(k)) for k in value), default=0)
                tables += [f"  {k!s:<{width}}  {v}" for k, v in value.items()]
            elif isinstance(value, (str, int, float, bool)) or value is None:
                line += f" {key}={value}"
            # Lists (an argv, say) are for machines: the message already says it for people.
        if record.exc_info:
            tables.append("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return "\n".join([line, *tables])


def resolve_format(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`json` or `text`: DEVLOOP_LOG_FORMAT if set, else text on a terminal and JSON elsewhere."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(FORMAT_ENV, "").strip().lower()
    if chosen in FORMATS:
        return chosen
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or exotic stream
        tty = False
    return TEXT if tty else JSON


def configure_logging(
    level: int | str | None = None,
    stream: TextIO | None = None,
    log_format: str | None = None,
) -> str:
    """Send every logger's records to `stream` (default stderr) in the resolved format, replacing
    any handlers set before; returns the format used. The level comes from `level`, else
    DEVLOOP_LOG_LEVEL, else INFO. Call once at a process's start."""
    stream = sys.stderr if stream is None else stream
    chosen = log_format or resolve_format(stream)
    if chosen not in FORMATS:
        raise ValueError(f"log format {chosen!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == JSON else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get(LEVEL_ENV, "").strip().upper() or logging.INFO)
    return chosen
