"""The WebSocket transport: the packet protocol, byte for byte, in the binary messages of a
WebSocket at ``/x-stream`` on the HTTP port (PROTOCOL §9). Message boundaries mean nothing;
a text message is a protocol error (close code 1003).

Like ``tcp.py`` this is an adapter and nothing more: each WebSocket gets a
``ConnectionDriver``, which runs the protocol against the engine. Reading is the ASGI
``receive()`` loop, which waits while the driver has paused reading (the WebSocket
library stops reading the socket once its queue is full: backpressure reaches the client);
writing goes through a queue that one task sends in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..metrics import WEBSOCKET
from .driver import ConnectionDriver, ConnectionHub

if TYPE_CHECKING:
    from ..engine import Engine
    from ..settings import ServerSettings
    from .limits import SharedLimits

__all__ = ["WEBSOCKET_PATH", "WebSocketEndpoint"]

log = logging.getLogger("xstream.websocket")

WEBSOCKET_PATH: Final = "/x-stream"
# Bytes queued for sending above which the driver stops producing replies.
_HIGH_WATER: Final = 1024 * 1024
_UNSUPPORTED_DATA: Final = 1003
_INTERNAL_ERROR: Final = 1011


class WebSocketEndpoint:
    """The endpoint (``serve``); its connections share one ``ConnectionHub``, made when the first
    one arrives (the engine exists only once the server has started)."""

    def __init__(self, settings: ServerSettings, shared: SharedLimits | None = None) -> None:
        self.settings = settings
        self.shared = shared
        self.engine: Engine | None = None
        self.hub: ConnectionHub | None = None

    async def serve(self, websocket: WebSocket) -> None:
        if self.engine is None:
            await websocket.close(code=_INTERNAL_ERROR, reason="server not started")
            return
        if self.hub is None:
            self.hub = ConnectionHub(self.engine, self.settings, self.shared, WEBSOCKET)
        await websocket.accept()
        await WebSocketConnection(self.hub, websocket).run()

    async def close(self) -> None:
        """Server shutdown: windows end with 503, idle connections close."""
        if self.hub is not None:
            await self.hub.close()


class WebSocketConnection:
    """One accepted WebSocket, as the driver's ``Channel``."""

    def __init__(self, hub: ConnectionHub, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._readable = asyncio.Event()
        self._readable.set()
        self._outgoing: deque[bytes] = deque()
        self._queued = 0
        self._has_output = asyncio.Event()
        self._close_code: int | None = None  # set: close once the queue is sent
        self._aborted = False
        client = websocket.client.host if websocket.client is not None else "?"
        self.driver = ConnectionDriver(hub, self, client)

    async def run(self) -> None:
        sender = asyncio.get_running_loop().create_task(self._send())
        try:
            await self._receive()
        finally:
            self.driver.connection_lost()
            if self._close_code is None:  # the client went away: nothing more to send
                self._aborted = True
            self._has_output.set()
            with contextlib.suppress(Exception):
                await sender

    async def _receive(self) -> None:
        driver = self.driver
        while self._close_code is None and not self._aborted:
            await self._readable.wait()
            if self._close_code is not None or self._aborted:
                return
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                self._close_now(_UNSUPPORTED_DATA, "binary messages only")
                return
            view = memoryview(data)
            while view:
                taken = driver.data_received(view)
                view = view[taken:]
                if view:  # storage is behind, or the connection is ending
                    if self._close_code is not None or self._aborted:
                        return
                    await self._readable.wait()

    async def _send(self) -> None:
        websocket = self.websocket
        while True:
            while self._outgoing and not self._aborted:
                data = self._outgoing.popleft()
                self._queued -= len(data)
                if self._queued <= _HIGH_WATER:
                    self.driver.flow.resume_writing()
                try:
                    await websocket.send_bytes(data)
                except Exception:  # the client is gone
                    self._aborted = True
            if self._aborted or self._close_code is not None:
                break
            self._has_output.clear()
            await self._has_output.wait()
        if websocket.application_state is WebSocketState.CONNECTED:
            code = _INTERNAL_ERROR if self._aborted else self._close_code or 1000
            with contextlib.suppress(Exception):
                await websocket.close(code=code)

    def _close_now(self, code: int, reason: str) -> None:
        log.info("websocket %s: closing (%d %s)", self.driver.client, code, reason)
        self._close_code = code
        self._has_output.set()

    # ---- the driver's Channel ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._aborted or self._close_code is not None:
            return
        self._outgoing.append(data)
        self._queued += len(data)
        if self._queued > _HIGH_WATER:
            self.driver.flow.pause_writing()
        self._has_output.set()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    def close(self) -> None:
        if self._close_code is None:
            self._close_code = 1000
        self._readable.set()
        self._has_output.set()

    def abort(self) -> None:
        self._aborted = True
        self._readable.set()
        self._has_output.set()

    def close_after_last_packet(self) -> None:
        # Messages already received are dropped by the driver; the close follows the
        # last packet in order, so nothing can destroy it.
        self.close()
