"""What the tus and IETF faces of a stream route have in common: finding the upload of a
request, terminating it, its location, and the headers an append answers with. Each face
says how its problems look (``_problem``), which requests it takes
(``_version_problem``) and what every answer carries (``_base_headers``)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from ...app import StreamRoute
from ...engine import Refused, StreamStatus
from .context import HttpContext, key_of
from .errors import http_status
from .uploads import Appended, lookup, set_length

__all__ = ["UploadEndpoint"]


class UploadEndpoint:
    def __init__(self, context: HttpContext, route: StreamRoute) -> None:
        self.context = context
        self.route = route

    # ---- what each face says -----------------------------------------------------------
    def _problem(
        self, status: int, message: str, extra: Mapping[str, str] | None = None
    ) -> Response:
        raise NotImplementedError

    def _version_problem(self, request: Request) -> Response | None:
        raise NotImplementedError

    def _base_headers(self) -> dict[str, str]:
        """What every answer of the face carries."""
        return {}

    # ---- shared ------------------------------------------------------------------------
    def _refused(self, refused: Refused, extra: Mapping[str, str] | None = None) -> Response:
        return self._problem(http_status(refused.status), refused.message, extra)

    def _location(self, request: Request, key: str) -> str:
        return f"{request.scope.get('root_path', '')}{self.route.path}/{key}"

    async def _find(self, request: Request) -> StreamStatus | Response:
        """The upload ``/R/<key>`` names, if the caller may see it; else the answer."""
        key = key_of(request)
        if key is None:
            return self._problem(404, "no such upload")
        found = await lookup(self.context, self.route, key, request)
        return self._refused(found) if isinstance(found, Refused) else found

    async def delete(self, request: Request) -> Response:
        """Termination (tus) or cancellation (IETF): the upload and its bytes are gone."""
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        found = await self._find(request)
        if not isinstance(found, StreamStatus):
            return found
        assert self.context.engine is not None
        refused = await self.context.engine.terminate(
            found.key, request.headers.get("authorization")
        )
        if refused is not None:
            return self._refused(refused)
        return Response(status_code=204, headers=self._base_headers())

    async def _deferred_length(
        self, request: Request, found: StreamStatus, said: int | None, length: int | None
    ) -> tuple[StreamStatus, int | None] | Response:
        """Before appending to ``found``: its status (its length set when it was deferred
        and this request says it, ``said``) and how many bytes the window may take when
        its length is still unknown (the body's ``length``, which it must say then)."""
        if not found.length_deferred:
            return found, None
        if said is not None:
            fixed = await set_length(self.context, request, found.key, said)
            return self._refused(fixed) if isinstance(fixed, Refused) else (fixed, None)
        if length is None:
            return self._problem(411, "Content-Length required until the length is known")
        return found, length

    @staticmethod
    def _appended_headers(appended: Appended, headers: dict[str, str]) -> None:
        """Into ``headers``: the durable offset, the stream's own ``x-stream-*`` headers,
        and ``Connection: close`` when the body was not read to its end."""
        headers["Upload-Offset"] = str(appended.offset)
        if not appended.body_read:
            headers["Connection"] = "close"
        for name, value in appended.headers.items():
            if name.startswith("x-stream-"):
                headers[name] = str(value)
