"""Logging set-up: one line per event, text or JSON, to stderr. Never a credential or a prompt at INFO."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RecentLogs(logging.Handler):
    """The last `capacity` log records, for `GET /api/logs` and the dashboard's terminal tab."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.records: deque[dict] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append({"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                                 + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()})
        except Exception:
            self.handleError(record)

    def last(self, limit: int) -> list[dict]:
        records = list(self.records)
        return records[-limit:] if limit > 0 else []


recent_logs = RecentLogs()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler, recent_logs]
    root.setLevel(level.upper())
