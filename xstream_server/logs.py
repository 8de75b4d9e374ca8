"""Log output: human-readable lines (the default) or one JSON object per line
(``--log-format json``) for log collectors.

A JSON line carries ``time``, ``level``, ``logger``, ``message``, ``pid``, and, when the
record knows them, ``key`` (the stream), ``route``, ``transport``, ``client`` and
``status``: given as ``extra={...}`` to the logging call, or, for the engine's messages
that begin "stream <key>", taken from the message itself. Payload bytes are never logged;
credentials that could slip into a message (a URL's password, a bearer token) are masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Final

__all__ = ["JsonFormatter", "configure_logging", "scrub"]

FIELDS: Final = ("key", "route", "transport", "client", "status")
_URL_PASSWORD: Final = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@")
_BEARER: Final = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def scrub(text: str) -> str:
    """Mask credentials: ``redis://:secret@host`` → ``redis://:***@host``, bearer tokens."""
    return _BEARER.sub(r"\1 ***", _URL_PASSWORD.sub(r"\1***@", text))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "pid": os.getpid(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if (
            "key" not in entry
            and isinstance(record.msg, str)
            and record.msg.startswith("stream %s")  # the engine's messages name it first
            and isinstance(record.args, tuple)
            and record.args
        ):
            entry["key"] = str(record.args[0])
        if record.exc_info:
            entry["error"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else _ScrubbingFormatter(_TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
