"""Serving the HTTP face with uvicorn (httptools) in the server's own process and event
loop, beside TCP. uvicorn is driven by its parts (startup, the ticker that refreshes the
Date header, shutdown), not by ``serve()``, which would take the process's signals from
the server's own handlers."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from starlette.types import ASGIApp

from .trailers import TrailerHttpToolsProtocol

__all__ = ["HttpTransportServer"]


class HttpTransportServer:
    def __init__(
        self,
        app: ASGIApp,
        shutdown_timeout: float,
        *,
        lifespan: bool = False,
    ) -> None:
        self._app = app
        self._lifespan = lifespan
        self._shutdown_timeout = shutdown_timeout
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server(
            (host, port), family=family, backlog=4096, reuse_port=reuse_port
        )
        config = uvicorn.Config(
            self._app,
            loop="none",
            http=TrailerHttpToolsProtocol,
            ws="websockets-sansio",
            # A message larger than this closes the WebSocket (1009); clients send raw
            # bytes in far smaller slices.
            ws_max_size=4 * 1024 * 1024,
            # No permessage-deflate: browsers offer it, and compressing file bytes (mostly
            # incompressible) on both ends cut Chromium's uploads to a third.
            ws_per_message_deflate=False,
            lifespan="on" if self._lifespan else "off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(self._shutdown_timeout)),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        self._server = server
        self._ticker = asyncio.get_running_loop().create_task(server.main_loop())
        name = self._socket.getsockname()
        return str(name[0]), int(name[1])

    async def close(self) -> None:
        """Stop accepting, let requests in flight answer, close the connections. (The
        server stops windows still being filled first: see ``Server.close``.)"""
        server = self._server
        if server is None:
            return
        server.should_exit = True
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await server.shutdown(sockets=[self._socket] if self._socket else None)
        self._server = None
