"""Binds the transport and the client's address to the log context of each HTTP request
and WebSocket (``--log-format json`` lines carry them; see ``xstream_server.logs``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ...logs import bind_log_fields
from ...metrics import HTTP, WEBSOCKET

__all__ = ["LogContextMiddleware", "with_route"]

Endpoint = Callable[[Request], Awaitable[Response]]


class LogContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        with bind_log_fields(
            transport=WEBSOCKET if kind == "websocket" else HTTP,
            client=str(client[0]) if client else "?",
        ):
            await self.app(scope, receive, send)


def with_route(route: str, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, logging with ``route`` in its log context."""

    async def bound(request: Request) -> Response:
        with bind_log_fields(route=route):
            return await endpoint(request)

    return bound
