"""Logging set-up: text or JSON lines on stderr, with every known secret masked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

MASK = "***"


class Redactor(logging.Filter):
    """Replaces each secret in a record's final message with `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        return json.dumps(entry)


def configure(level: str, style: str, secrets: Iterable[str]) -> Redactor:
    """Route the `updater` loggers to stderr in `style`; returns the redactor for reuse."""
    handler = logging.StreamHandler(sys.stderr)
    redactor = Redactor(secrets)
    handler.addFilter(redactor)
    if style == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("updater")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return redactor
