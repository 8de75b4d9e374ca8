"""The TCP transport: a listening socket on uvloop and, per connection, an
``asyncio.BufferedProtocol`` that hands its socket to a ``ConnectionDriver``.

Nothing here knows streams: the driver runs the protocol against the engine; this module
only reads (into the memory the driver names: the shared scratch buffer in packet mode, a
window's own buffer in raw mode, never a new Python object), writes, pauses and closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, cast

from .driver import ConnectionDriver, ConnectionHub

if TYPE_CHECKING:
    from ..engine import Engine
    from ..settings import ServerSettings
    from .limits import SharedLimits

__all__ = ["TcpConnection", "TcpTransportServer"]

log = logging.getLogger("xstream.tcp")

# How long raw bytes still arriving after a final error packet are read and dropped.
_LINGER_SECONDS: Final = 2.0


class TcpTransportServer:
    """Owns the listening socket; its connections share one ``ConnectionHub``."""

    def __init__(
        self, engine: Engine, settings: ServerSettings, shared: SharedLimits | None = None
    ) -> None:
        self.hub = ConnectionHub(engine, settings, shared)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Listen; with ``reuse_port`` beside other processes on the same port (workers)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self.hub),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=4096,
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        """Stop accepting, then close every connection (see ``ConnectionHub.close``)."""
        if self._server is not None:
            self._server.close()
        await self.hub.close()
        if self._server is not None:
            await self._server.wait_closed()


class TcpConnection(asyncio.BufferedProtocol):
    """One accepted socket: the asyncio callbacks go to the driver; the driver's ``Channel``
    calls come back to the transport."""

    def __init__(self, hub: ConnectionHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.driver: ConnectionDriver | None = None
        self._linger: asyncio.TimerHandle | None = None

    # ---- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.driver = ConnectionDriver(self.hub, self, client)

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self.driver is not None
        return self.driver.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        assert self.driver is not None
        self.driver.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        assert self.driver is not None
        self.driver.eof_received()
        return True  # our side stays open for the answers; the driver closes it

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        if self.driver is not None:
            self.driver.connection_lost()
            # No cycle left between us and the driver: its buffers go as soon as it ends,
            # not at the next garbage collection.
            self.driver = None

    def pause_writing(self) -> None:
        if self.driver is not None:
            self.driver.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.driver is not None:
            self.driver.flow.resume_writing()

    # ---- the driver's Channel ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_after_last_packet(self) -> None:
        """Closing a socket with unread input sends a reset, and a reset can destroy our last
        packet on its way: so send FIN after it, discard what still arrives, and close when
        the client does (or after a short linger)."""
        transport = self.transport
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.abort)
