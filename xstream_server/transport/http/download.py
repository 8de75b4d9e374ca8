"""``GET /R/<key>``: the bytes of a complete upload, whole or one ``Range`` of them, read
through the engine (which checks the caller's principal, as for a resume)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...app import StreamRoute
from ...engine import Refused
from .context import HttpContext, key_of
from .errors import http_status, problem
from .uploads import lookup

__all__ = ["DownloadEndpoint", "parse_range"]

_RANGE: Final = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


def parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """``Range`` → ``(first, last)`` inclusive; None to send everything (no header, several
    ranges, or one we do not understand, as RFC 9110 allows); ``"unsatisfiable"``."""
    if value is None:
        return None
    match = _RANGE.fullmatch(value.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


class DownloadEndpoint:
    def __init__(self, context: HttpContext, route: StreamRoute) -> None:
        self.context = context
        self.route = route

    async def get(self, request: Request) -> Response:
        key = key_of(request)
        if key is None:
            return problem(404, "no such upload")
        found = await lookup(self.context, self.route, key, request)
        if isinstance(found, Refused):
            return problem(http_status(found.status), found.message)
        if not found.complete:
            return problem(409, f"upload incomplete: {found.offset} of {found.total} bytes")
        size = found.total
        wanted = parse_range(request.headers.get("range"), size)
        if wanted == "unsatisfiable":
            return problem(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
        headers = {"Accept-Ranges": "bytes"}
        status = 200
        first, last = 0, size - 1
        if isinstance(wanted, tuple):
            first, last = wanted
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
        return StreamingResponse(
            self._bytes(key, first, last + 1, request.headers.get("authorization")),
            status_code=status,
            headers=headers,
            media_type="application/octet-stream",
        )

    async def _bytes(
        self, key: str, start: int, end: int, authorization: str | None
    ) -> AsyncIterator[bytes]:
        assert self.context.engine is not None
        position = start
        async for chunk in self.context.engine.read(key, start, authorization):
            piece = chunk[: end - position]
            position += len(piece)
            if piece:
                yield piece
            if position >= end:
                return
