"""``--log-format json``: one JSON object per log record on stderr, for log shippers.

Uses the standard library's :mod:`logging` with a small formatter (a dependency for ~20 lines
would not pay). A record's ``extra={...}`` fields are kept as top-level keys::

    {"ts": "2026-12-03T09:12:01.123Z", "level": "WARNING", "logger": "shardline.engine",
     "message": "a request to http://... failed ...", "records": 1200}
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")

# attributes every LogRecord has: what is not among them came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ts (UTC, ISO 8601), level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(log_format: str) -> None:
    """Set up logging for a command: ``"json"`` puts a JSON handler on the root logger (shardline's
    loggers at INFO); ``"text"`` leaves Python's default (warnings and errors on stderr)."""
    if log_format != "json":
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_shardline_info)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)


def _shardline_info(record: logging.LogRecord) -> bool:
    """INFO and up from shardline and its plugins (``shardline*`` loggers), WARNING and up from others."""
    return record.levelno >= logging.WARNING or record.name.startswith("shardline")
