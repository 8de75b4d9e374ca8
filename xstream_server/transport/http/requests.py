"""Request routes over HTTP (PROTOCOL §9): ``POST /R`` with the payload as its body. The
``Content-Type`` gives the data format, headers other than HTTP's own become metadata,
and the response carries the handler's payload, or a problem with its message."""

from __future__ import annotations

from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ...protocol import DataFormat
from ...protocol import Request as XRequest
from .context import HttpContext
from .errors import http_status, problem

__all__ = ["RequestEndpoint"]

_MEDIA_TYPES: Final = {
    DataFormat.JSON: "application/json",
    DataFormat.TEXT: "text/plain; charset=utf-8",
    DataFormat.BYTES: "application/octet-stream",
}
# HTTP's own headers are not the route's metadata.
_NOT_METADATA: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "origin",
        "referer",
        "transfer-encoding",
        "user-agent",
    }
)


def data_format_of(content_type: str | None) -> DataFormat:
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/json":
        return DataFormat.JSON
    if media == "text/plain":
        return DataFormat.TEXT
    return DataFormat.BYTES


class RequestEndpoint:
    """``POST /R`` for a request route, or the built-in ``/stream-status``."""

    def __init__(self, context: HttpContext, path: str, max_payload: int) -> None:
        self.context = context
        self.path = path
        self.max_payload = max_payload

    async def handle(self, request: Request) -> Response:
        engine = self.context.engine
        if engine is None:
            return problem(503, "server not started")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_payload:
                    return problem(413, f"payload larger than {self.max_payload} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        metadata = {
            name: value for name, value in request.headers.items() if name not in _NOT_METADATA
        }
        answer = await engine.handle_request(
            XRequest(
                self.path,
                None,
                data_format_of(request.headers.get("content-type")),
                bytes(body),
                metadata,
                request.headers.get("authorization"),
            )
        )
        if answer.message is not None and answer.status != 0:
            return problem(http_status(answer.status), answer.message)
        headers = {f"x-stream-{k}": str(v) for k, v in answer.headers.items()}
        return Response(
            answer.payload,
            status_code=http_status(answer.status),
            headers=headers,
            media_type=_MEDIA_TYPES[answer.data_format or DataFormat.BYTES],
        )
