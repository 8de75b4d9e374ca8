"""The uTP transport: a listening uTP socket (``xstream_server.utp``) whose connections are
handed, like TCP's, to a ``ConnectionDriver`` — the same adapter class as TCP, since a uTP
connection is an ``asyncio.Transport`` too; only the end of a connection differs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from ..metrics import UTP
from ..utp.socket import UtpServer, UtpStream
from .driver import ConnectionHub
from .tcp import TcpConnection

if TYPE_CHECKING:
    from ..engine import Engine
    from ..settings import ServerSettings

__all__ = ["UtpConnection", "UtpTransportServer"]


# How long closed connections may take to get their last packets acknowledged at shutdown.
_LINGER_SECONDS: Final = 2.0


class UtpConnection(TcpConnection):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, UtpStream)
        # The driver forgets a connection once it is closed, as with TCP; the uTP
        # connection goes on resending what the peer has not acknowledged.
        transport.close_waits_for_ack = False
        super().connection_made(transport)

    def close_after_last_packet(self) -> None:
        """uTP has no reset that could destroy our last packet: the FIN follows it, what
        still arrives is acknowledged and dropped, and the connection ends once the FIN
        is acknowledged (or the close times out)."""
        if self.transport is not None:
            self.transport.close()


class UtpTransportServer:
    """Owns the UDP socket; its connections share one ``ConnectionHub``."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.hub = ConnectionHub(engine, settings, transport=UTP)
        self._server: UtpServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await UtpServer.listen(host, port, lambda: UtpConnection(self.hub))
        return self._server.sockname

    async def close(self) -> None:
        """Close every connection (see ``ConnectionHub.close``), then the socket."""
        await self.hub.close()
        if self._server is not None:
            await self._server.close(linger=_LINGER_SECONDS)
