"""The Starlette application of an ``App``: a tus endpoint per stream route, ``POST`` per
request route and for ``/stream-status``, problem+json errors, and CORS.

It can be served by the xstream server (``Server`` runs it with uvicorn beside TCP) or
mounted into another Starlette or FastAPI application; see ``Server.http_app``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...app import RequestRoute, StreamRoute
from ...engine import STATUS_ROUTE
from .context import HttpContext
from .download import DownloadEndpoint
from .errors import problem
from .ietf import IetfEndpoint, is_ietf
from .log_context import LogContextMiddleware, with_route
from .requests import RequestEndpoint
from .tus import TusEndpoint

__all__ = ["EXPOSED_HEADERS", "build_http_app"]

# What a browser script may read of a response from another origin.
EXPOSED_HEADERS: Final = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Defer-Length",
    "Upload-Concat",
    "Upload-Complete",
    "Upload-Limit",
    "Upload-Draft-Interop-Version",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "X-Stream-Checksum",
    "Content-Range",
    "Accept-Ranges",
)
_METHODS: Final = ("GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS")


def _stream_routes(context: HttpContext, route: StreamRoute) -> list[BaseRoute]:
    tus = TusEndpoint(context, route)
    ietf = IetfEndpoint(context, route)
    download = DownloadEndpoint(context, route)

    async def collection(request: Request) -> Response:
        if is_ietf(request):
            if request.method == "OPTIONS":
                return ietf.options(request)
            return await ietf.create(request)
        if request.method == "OPTIONS":
            return tus.options(request)
        return await tus.create(request)

    async def upload(request: Request) -> Response:
        if request.method == "GET":
            return await download.get(request)
        if request.method == "OPTIONS":
            return ietf.options(request) if is_ietf(request) else tus.options(request)
        face: TusEndpoint | IetfEndpoint = ietf if is_ietf(request) else tus
        if request.method == "HEAD":
            return await face.head(request)
        if request.method == "PATCH":
            return await face.patch(request)
        return await face.delete(request)

    return [
        Route(route.path, with_route(route.path, collection), methods=["POST", "OPTIONS"]),
        Route(
            route.path + "/{key}",
            with_route(route.path, upload),
            methods=["GET", "HEAD", "PATCH", "DELETE", "OPTIONS"],
        ),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail, exc.headers)


def build_http_app(
    context: HttpContext,
    *,
    max_payload: int,
    cors_origins: Sequence[str] = ("*",),
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """``extra_routes`` come first: the WebSocket transport and the upload page."""
    routes: list[BaseRoute] = list(extra_routes)
    for route in context.app.routes.values():
        if isinstance(route, StreamRoute):
            routes += _stream_routes(context, route)
        elif isinstance(route, RequestRoute):
            limit = route.max_payload if route.max_payload is not None else max_payload
            routes.append(
                Route(
                    route.path, RequestEndpoint(context, route.path, limit).handle, methods=["POST"]
                )
            )
    if STATUS_ROUTE not in context.app.routes:
        routes.append(
            Route(
                STATUS_ROUTE,
                RequestEndpoint(context, STATUS_ROUTE, max_payload).handle,
                methods=["POST"],
            )
        )
    middleware = [
        Middleware(LogContextMiddleware),
        Middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=list(_METHODS),
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=86400,
        ),
    ]
    return Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error}
    )
