"""Structured logs: one line per event, `key=value` (console) or JSON.

    log = get_logger("sources")
    log.info("pool loaded", pool="default/quickstart", endpoints=4)

Verbosity follows upstream's `-v` levels (2 default, 4 debug, 5 trace).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_ROOT = "sluice"


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(str(value))}")
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def _quote(text: str) -> str:
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text)


class Logger:
    """A thin wrapper that carries structured fields to the formatter."""

    def __init__(self, inner: logging.Logger):
        self._inner = inner

    def _log(self, level: int, msg: str, exc: bool, fields: dict[str, Any]) -> None:
        if self._inner.isEnabledFor(level):
            self._inner.log(level, msg, exc_info=exc, extra={"fields": fields})

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, False, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, False, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, False, fields)

    def error(self, msg: str, *, exc: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, msg, exc, fields)

    def enabled(self, level: int) -> bool:
        return self._inner.isEnabledFor(level)


def get_logger(name: str) -> Logger:
    return Logger(logging.getLogger(f"{_ROOT}.{name}"))


def configure(fmt: str = "console", verbosity: int = 2, stream: Any = None) -> None:
    """Install the formatter on Sluice's root logger. `fmt` is console|text|json."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _KeyValueFormatter())
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbosity >= 4 else logging.INFO)
