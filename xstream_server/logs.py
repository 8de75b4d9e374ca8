"""Log output: human-readable lines (the default) or one JSON object per line
(``--log-format json``) for log collectors.

A JSON line carries ``time``, ``level``, ``logger``, ``message``, ``pid``, and, when the
record knows them, ``key`` (the stream), ``route``, ``transport`` (tcp, websocket, utp,
http), ``client`` (the peer's address), ``principal`` and ``status``. They come from, in
this order: ``extra={...}`` given to the logging call (a stream's session passes its
``log_fields``); the log context a transport binds around the work of one connection or
request (``bind_log_fields``); and, for the engine's messages that begin "stream <key>",
the message itself. Payload bytes are never logged; credentials that could slip into a
message (a URL's password, a bearer token, a JWT, a ``token=`` query parameter) are masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import Context, ContextVar, copy_context
from types import MappingProxyType
from typing import Final

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "bind_log_fields",
    "configure_logging",
    "context_with_log_fields",
    "log_fields",
    "scrub",
]

FIELDS: Final = ("key", "route", "transport", "client", "principal", "status")
_URL_PASSWORD: Final = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@")
_BEARER: Final = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# A JSON Web Token (three base64url parts, the first an encoded JSON object: "eyJ").
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TOKEN_PARAMETER: Final = re.compile(r"(?i)([?&;](?:access_)?token=)[^&#\s]+")

# The fields of the work under way in this task: a connection, a request, a stream.
_NO_FIELDS: Final[Mapping[str, object]] = MappingProxyType({})
_context_fields: ContextVar[Mapping[str, object]] = ContextVar(
    "xstream_log_fields", default=_NO_FIELDS
)


def log_fields() -> Mapping[str, object]:
    """The log context bound in this task (see ``bind_log_fields``)."""
    return _context_fields.get()


@contextmanager
def bind_log_fields(**fields: object) -> Iterator[None]:
    """Add ``fields`` to the log context of the code run inside (and of the tasks it
    starts): a transport binds ``transport`` and ``client`` around one connection's or one
    request's work, so that the lines logged for it carry them."""
    token = _context_fields.set({**_context_fields.get(), **fields})
    try:
        yield
    finally:
        _context_fields.reset(token)


def context_with_log_fields(**fields: object) -> Context:
    """A copy of the current context with ``fields`` added to its log context, for the
    tasks of one connection (``loop.create_task(..., context=...)``)."""
    context = copy_context()
    context.run(_context_fields.set, {**_context_fields.get(), **fields})
    return context


_FRAME_LOGGERS: Final = ("websockets", "uvicorn.error")
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def scrub(text: str) -> str:
    """Mask credentials: ``redis://:secret@host`` → ``redis://:***@host``, bearer and basic
    credentials, JWTs, ``token=`` query parameters."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _TOKEN_PARAMETER.sub(r"\1***", text)
    return _JWT.sub("***", text)


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
        bound = _context_fields.get()
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = bound.get(name)
            if value is not None:
                entry[name] = scrub(value) if isinstance(value, str) else value
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
    # The websockets library logs every frame, payload bytes and all, at DEBUG, to its own
    # logger or to the one uvicorn hands it: those stay at INFO or above whatever the level.
    for name in _FRAME_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.root.level))
