"""Ordinary requests: one packet in, one answer out, through the app's request routes, and
the built-in ``/stream-status`` route. User code that fails is logged with its traceback
and answered with 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..app import (
    App,
    Reply,
    RequestContext,
    RequestRoute,
    RouteError,
    StreamRoute,
    encode_reply,
)
from ..protocol import DataFormat, Request, Status
from .completion import decode_payload
from .outcomes import Refused, Response, StreamStatus

__all__ = ["STATUS_ROUTE", "RequestDispatcher"]

log = logging.getLogger("xstream.engine")

STATUS_ROUTE: Final = "/stream-status"

StatusLookup = Callable[[str, "str | None"], Awaitable["StreamStatus | Refused"]]


class RequestDispatcher:
    def __init__(self, app: App, status: StatusLookup) -> None:
        self.app = app
        self._status = status

    async def handle(self, request: Request) -> Response:
        route = self.app.routes.get(request.route)
        if route is None and request.route == STATUS_ROUTE:
            return await self._stream_status(request)
        if route is None:
            return Response(Status.NOT_FOUND, message=f"no route {request.route}")
        if not isinstance(route, RequestRoute):
            only = "streams" if isinstance(route, StreamRoute) else "pulls"
            return Response(Status.METHOD_NOT_ALLOWED, message=f"this route takes only {only}")
        try:
            principal = await route.auth(request.authorization) if route.auth else None
            try:
                content = decode_payload(request.data_format, request.payload)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                return Response(
                    Status.BAD_REQUEST, message=f"payload is not valid {request.data_format}: {exc}"
                )
            context = RequestContext(
                request.route,
                request.id,
                request.data_format,
                request.payload,
                content,
                request.metadata,
                principal,
            )
            result = await route.handler(context)
            payload, fmt, headers = encode_reply(result)
        except RouteError as exc:
            return Response(exc.status, message=exc.message)
        except Exception:
            log.exception("handler of %s failed", request.route)
            return Response(Status.SERVER_ERROR, message="handler error")
        feed = result.feed if isinstance(result, Reply) else None
        return Response(Status.OK, payload, fmt, headers, feed=feed)

    async def _stream_status(self, request: Request) -> Response:
        """``/stream-status``: JSON ``{"key": K}`` in, the stream's route, total, durable
        offset and state out. An app may register its own route of that name instead."""
        try:
            key = json.loads(request.payload)["key"]
            if not isinstance(key, str):
                raise TypeError(key)
        except (ValueError, KeyError, TypeError, RecursionError):
            return Response(Status.BAD_REQUEST, message='payload must be JSON {"key": "<key>"}')
        found = await self._status(key, request.authorization)
        if isinstance(found, Refused):
            return Response(found.status, message=found.message)
        info: dict[str, Any] = {
            "key": found.key,
            "route": found.route,
            "total": found.total,
            "offset": found.offset,
            "state": _state_of(found),
            "expires": None if found.expires is None else round(found.expires, 3),
        }
        if found.completing:
            route = self.app.routes.get(found.route)
            allowed = route.completion_attempts if isinstance(route, StreamRoute) else 1
            info["attempts"] = found.attempts
            info["attempts_left"] = max(0, allowed - found.attempts)
        fields = self.app.status_fields.get(found.route)
        if fields is not None:
            try:
                extra = await fields(found.key)
            except Exception:
                log.exception("status fields of %s failed", found.route)
                return Response(Status.SERVER_ERROR, message="handler error")
            info = {**extra, **info}
        return Response(Status.OK, json.dumps(info).encode(), DataFormat.JSON)


def _state_of(found: StreamStatus) -> str:
    """``active`` while bytes are missing; ``completing`` when all are stored but the
    completion handler has not succeeded yet; ``complete`` once the result is recorded."""
    if found.complete:
        return "complete"
    return "completing" if found.completing else "active"
