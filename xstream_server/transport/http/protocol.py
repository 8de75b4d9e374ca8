"""uvicorn's httptools protocol, with request bodies handed over without needless copies.

Two ways, both keeping uvicorn's parsing of requests, its responses, keep-alive, flow
control, disconnects and upgrades:

* Through ASGI ``receive()``: uvicorn appends every body chunk the parser gives it to a
  ``bytearray`` and hands the application ``bytes(that)``, two copies of every uploaded
  byte. When the application has taken every earlier chunk (the usual case: the engine
  stores each chunk before asking for the next), this protocol keeps the parser's own
  ``bytes`` object as the pending body instead, and ``bytes()`` of a ``bytes`` object is that
  same object: no copy. Otherwise (chunks piling up while the application is busy) it does
  what uvicorn does.
* Straight into the engine's window (``direct``): a request with a ``Content-Length`` body
  offers a ``BodyTap`` in its scope; the body's bytes then go from the socket into the
  window's buffer as on the TCP transport, and the parser never sees them.

Trailer fields are kept apart as ``trailers`` does. What this relies on in uvicorn's
``HttpToolsProtocol``: the attributes ``parser``, ``cycle``, ``flow``, ``transport``, the
callbacks ``on_message_begin``, ``on_headers_complete``, ``on_body``,
``on_message_complete``, its ``connection_lost``/``eof_received``/``pause_writing``/
``resume_writing``, and of its ``RequestResponseCycle``: ``scope``, ``body``, ``more_body``,
``disconnected``, ``response_complete``, ``waiting_for_100_continue``, ``message_event``.
``tests/http/test_direct_body.py`` fails if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from ... import metrics
from .direct import DIRECT_BODY, BodyTap
from .trailers import TrailerHttpToolsProtocol

__all__ = ["BodyHandingProtocol"]


class BodyHandingProtocol(TrailerHttpToolsProtocol):
    """The trailer-keeping httptools protocol (``trailers``), handing body chunks over as
    they are, or tapping the body straight into a window (``direct``); counted in the
    metrics as an open HTTP connection until it closes or becomes a WebSocket (counted as
    one by the WebSocket transport)."""

    _counted: bool = False
    # Body bytes of the current request read so far, by the parser or a ``WindowReader``.
    body_seen: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted = True
        metrics.connection_opened(metrics.HTTP)

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self.scope is not None:  # the tap refers back to this protocol: no cycle left
            cast(dict[str, Any], self.scope).pop(DIRECT_BODY, None)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._uncount()
        super().handle_websocket_upgrade()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            metrics.connection_closed(metrics.HTTP)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_seen = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        length = _content_length(self.headers)
        if length and not self.parser.should_upgrade():
            cast(dict[str, Any], self.scope)[DIRECT_BODY] = BodyTap(self, self.scope, length)

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        cycle = cast(Any, self.cycle)
        pending = cycle.body
        if type(body) is bytes and not pending and not cycle.response_complete:
            if self.parser.should_upgrade() and self._should_upgrade():
                return
            cycle.body = body  # taken as it is by receive(): bytes(body) is body
            if len(body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()
            return
        if type(pending) is bytes:
            cycle.body = bytearray(pending)  # more chunks before the app took this one
        super().on_body(body)

    # ---- for a WindowReader ------------------------------------------------------------
    def body_taken(self, nbytes: int) -> None:
        """``nbytes`` of the body were read past the parser."""
        self.body_seen += nbytes

    def body_complete(self) -> None:
        """The rest of the body was read past the parser: the request is complete, and the
        next bytes on the connection begin a new one, which a fresh parser reads."""
        self.parser = _new_parser(self)
        self.on_message_complete()

    def body_abandoned(self) -> None:
        """Reading stopped within the body: the connection is closed after the answer."""
        cycle = cast(Any, self.cycle)
        if cycle is not None:
            cycle.keep_alive = False


def _new_parser(protocol: BodyHandingProtocol) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    # As uvicorn sets up its own: it may answer a request after which the client closed.
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length when one Content-Length says it and no Transfer-Encoding applies."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            if length is not None or not value.strip().isdigit():
                return None
            length = int(value)
    return length
