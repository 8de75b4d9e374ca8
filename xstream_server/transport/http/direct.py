"""Request bodies read from the socket straight into the engine's window, as the TCP
transport reads: no Python object per read, no parsing, no task switch per chunk.

Through the ASGI path every body chunk costs a ``bytes`` object made by the event loop for
each read, a second one made by the HTTP parser for the body part of it (both freshly
allocated, so page faults and zeroing on top of the copies), the parser's callbacks, and a
wake-up of the application's task; reading pauses after every chunk until the application
asks for the next. Profiled at 16 uploads at once, that was half the server's CPU per byte.

A request with a ``Content-Length`` body whose length the protocol knows can instead be
*tapped* (``BodyTap``): once the application has its window, the connection's protocol is
swapped for a ``WindowReader``, an ``asyncio.BufferedProtocol`` that hands the event loop
the window's own buffer (``RawWindow.buffer()``) for each read and reports what arrived
(``RawWindow.received()``), never past the body's end. When the last byte of the body is
in, uvicorn's protocol is put back with a fresh parser (the request is complete: the next
bytes on the connection are a new request), as if its parser had read the body itself.
When the window ends before the body does, reading stops, and the rest of the body is never
taken for a request: the answer closes the connection.

The parts of uvicorn this relies on are listed in ``protocol`` and checked by
``tests/http/test_direct_body.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import ClientDisconnect

from ...engine import RawWindow
from ...engine.window import SETTLING

if TYPE_CHECKING:
    from .protocol import BodyHandingProtocol

__all__ = ["DIRECT_BODY", "BodyTap", "WindowReader", "body_tap_of"]

# The scope entry under which the server offers a request's ``BodyTap``.
DIRECT_BODY: Final = "xstream.direct_body"
# Where bytes go that are read but not taken (after the window ended): never used for data.
_SCRAP_SIZE: Final = 64 * 1024


class BodyTap:
    """One request's body, to be read into a window instead of through ``receive()``."""

    def __init__(self, protocol: BodyHandingProtocol, scope: Any, length: int) -> None:
        self._protocol = protocol
        self._scope = scope
        self.length = length  # the body's Content-Length

    def _cycle(self) -> Any | None:
        """uvicorn's request-response cycle of this request, while it is the one whose body
        the connection is reading."""
        cycle = self._protocol.cycle
        if cycle is None or cycle.scope is not self._scope:
            return None
        return cycle

    @property
    def left(self) -> int:
        """Body bytes the connection has not read yet."""
        return self.length - self._protocol.body_seen

    def usable(self) -> bool:
        """True while the rest of the body can be read straight into a window."""
        cycle = self._cycle()
        return (
            cycle is not None
            and cycle.more_body
            and not cycle.disconnected
            and not cycle.response_complete
            and self._protocol.transport is not None
            and not self._protocol.transport.is_closing()
        )

    def take_pending(self) -> bytes | bytearray:
        """Body bytes the parser read before the window was ready (what ``receive()`` would
        hand over next); empty when there are none."""
        cycle = self._cycle()
        if cycle is None or not cycle.body:
            return b""
        pending: bytes | bytearray = cycle.body
        cycle.body = bytearray()
        return pending

    def reader(self) -> WindowReader:
        """The protocol that will read the rest of the body into a window (``start``)."""
        return WindowReader(self._protocol)

    def start(self, reader: WindowReader) -> None:
        """Read the rest of the body (``left`` bytes, at least one) through ``reader``."""
        cycle = self._cycle()
        assert cycle is not None and self.left > 0
        transport = self._protocol.transport
        if cycle.waiting_for_100_continue and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        reader.start(self.left)


class WindowReader(asyncio.BufferedProtocol):
    """The connection's protocol while a body pours into a window; also the window's
    ``ReadControl``. ``ended`` resolves to True when the body was read to its end, to False
    when the window ended first, and raises ``ClientDisconnect`` when the client left."""

    def __init__(self, protocol: BodyHandingProtocol) -> None:
        self._http = protocol
        self._window: RawWindow | None = None
        self._left = 0
        self._started = False
        self._scrap: memoryview | None = None
        self._loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[bool] = self._loop.create_future()
        self.last_read = self._loop.time()

    @property
    def active(self) -> bool:
        """True from ``start`` until the body or the window ended."""
        return self._started and not self.ended.done()

    def attach(self, window: RawWindow) -> None:
        self._window = window

    def start(self, left: int) -> None:
        assert self._window is not None and not self._started
        self._left = left
        self._started = True
        self.last_read = self._loop.time()
        self._http.transport.set_protocol(self)
        self._http.flow.resume_reading()  # paused after a chunk the app had not taken

    # ---- asyncio.BufferedProtocol ------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        if self.active and self._window is not None:
            view = self._window.buffer()
            if not view:
                # The window pauses reading whenever it has no room: reading now would
                # take bytes it cannot hold. The loop closes the connection instead.
                raise RuntimeError("read with no room in the window")
            return view[: self._left] if len(view) > self._left else view
        # Read although the window is over (reading is paused already): never into it.
        if self._scrap is None:
            self._scrap = memoryview(bytearray(_SCRAP_SIZE))
        return self._scrap

    def buffer_updated(self, nbytes: int) -> None:
        window = self._window
        if not self.active or window is None:
            return  # bytes after the window's end: the connection is closing
        self.last_read = self._loop.time()
        self._left -= nbytes
        self._http.body_taken(nbytes)
        window.received(nbytes)  # stored; may end the window (full, or storage failed)
        if not self.active:
            return
        if not self._left:
            self._finish()
        elif window.ending or not window.remaining:
            self._stop_reading()

    def eof_received(self) -> None:
        self._http.eof_received()  # None: the transport closes, as uvicorn's would

    def connection_lost(self, exc: Exception | None) -> None:
        self._http.connection_lost(exc)
        if self.active:
            self.ended.set_exception(ClientDisconnect())
            # Retrieved by the pump; marked here so an abandoned reader logs nothing.
            self.ended.exception()

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    # ---- ReadControl of the window -----------------------------------------------------
    def pause_reading(self, reason: str) -> None:
        if reason == SETTLING:  # the window is over (stopped, failed): take no more
            self._stop_reading()
        elif self.active:
            self._http.flow.pause_reading()

    def resume_reading(self, reason: str) -> None:
        if self.active:
            self._http.flow.resume_reading()

    # ---- the end -----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop reading into the window (its owner gave up on it)."""
        if self._started:
            self._stop_reading()

    def _stop_reading(self) -> None:
        """The window ended before the body: no more reading on this connection, whose
        answer closes it (the rest of the body must not be taken for a request)."""
        if not self.active:
            return
        self._http.flow.pause_reading()
        self._http.body_abandoned()
        self.ended.set_result(False)

    def _finish(self) -> None:
        """The body is in: the connection goes back to uvicorn's protocol."""
        self._http.transport.set_protocol(self._http)
        self._http.body_complete()
        self.ended.set_result(True)


def body_tap_of(scope: Any) -> BodyTap | None:
    """The request's tap, when the server serving it offers one and the body can be read
    straight into a window (a ``Content-Length`` body not read to its end yet)."""
    tap = scope.get(DIRECT_BODY)
    if isinstance(tap, BodyTap) and tap.usable() and tap.left > 0:
        return tap
    return None
