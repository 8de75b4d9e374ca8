"""uvicorn's httptools protocol, with request bodies handed over without copying them twice.

uvicorn appends every body chunk the parser gives it to a ``bytearray`` and hands the
application ``bytes(that)``: two copies of every uploaded byte, a third of the event loop's
time on a PATCH of many MB (profiled). When the application has taken every earlier chunk
(the usual case: the engine stores each chunk before asking for the next), this protocol
keeps the parser's own ``bytes`` object as the pending body instead, and ``bytes()`` of a
``bytes`` object is that same object: no copy. Otherwise (chunks piling up while the
application is busy) it does what uvicorn does. Flow control, disconnects and upgrades are
uvicorn's own; trailer fields are kept apart as ``trailers`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from ... import metrics
from .trailers import TrailerHttpToolsProtocol

__all__ = ["BodyHandingProtocol"]


class BodyHandingProtocol(TrailerHttpToolsProtocol):
    """The trailer-keeping httptools protocol (``trailers``), handing body chunks over as
    they are; counted in the metrics as an open HTTP connection until it closes or
    becomes a WebSocket (counted as one by the WebSocket transport)."""

    _counted: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted = True
        metrics.connection_opened(metrics.HTTP)

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._uncount()
        super().handle_websocket_upgrade()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            metrics.connection_closed(metrics.HTTP)

    def on_body(self, body: bytes) -> None:
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
