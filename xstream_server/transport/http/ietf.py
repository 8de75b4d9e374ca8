"""The IETF resumable-uploads draft (draft-ietf-httpbis-resumable-upload) on the same
routes and uploads as tus, told apart by the ``Upload-Draft-Interop-Version`` header.

Interop versions 6 (draft -05: what tus-js-client's ``ietf-draft-05`` protocol and tusd
speak) and 7 and 8 (drafts -06 to -11), which a server sees alike: creation (``POST /R``,
with all, some or none of the bytes), offset retrieval (``HEAD``), appending (``PATCH``),
cancellation (``DELETE``), and ``OPTIONS`` discovery with ``Upload-Limit``. The draft's
informational ``104 (Upload Resumption Supported)`` cannot be sent: ASGI has no way to send
an interim response (the draft lets a server skip it; the final response carries
``Location``).

An upload created without its length (no ``Upload-Length``, not complete) gets it from
the request that completes it (its offset plus its ``Content-Length``); until then every
request carrying bytes must say how many (``Content-Length``, else 411).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from ...engine import Refused, StreamStatus
from ...protocol import Status
from .endpoint import UploadEndpoint
from .errors import http_status, problem
from .headers import BadHeader, decimal_header, parse_metadata
from .uploads import Appended, append, create, create_with_body, lookup

__all__ = ["INTEROP_HEADER", "INTEROP_VERSIONS", "IetfEndpoint", "is_ietf"]

INTEROP_HEADER: Final = "upload-draft-interop-version"
INTEROP_VERSIONS: Final = frozenset({"6", "7", "8"})
PARTIAL_UPLOAD: Final = "application/partial-upload"

_PROBLEMS: Final = "https://iana.org/assignments/http-problem-types#"
MISMATCHING_OFFSET: Final = _PROBLEMS + "mismatching-upload-offset"
COMPLETED_UPLOAD: Final = _PROBLEMS + "completed-upload"
INCONSISTENT_LENGTH: Final = _PROBLEMS + "inconsistent-upload-length"


def is_ietf(request: Request) -> bool:
    return INTEROP_HEADER in request.headers


def _boolean(request: Request, name: str) -> bool | None:
    """A structured-field boolean (``?1``/``?0``)."""
    value = request.headers.get(name)
    if value is None:
        return None
    if value.strip() not in ("?0", "?1"):
        raise BadHeader(f"{name} must be ?0 or ?1")
    return value.strip() == "?1"


def _sf(flag: bool) -> str:
    return "?1" if flag else "?0"


class IetfEndpoint(UploadEndpoint):
    """The IETF-draft face of one stream route."""

    def _problem(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        problem_type: str | None = None,
    ) -> Response:
        return problem(status, message, headers, problem_type=problem_type)

    def _version_problem(self, request: Request) -> Response | None:
        version = request.headers.get(INTEROP_HEADER, "").strip()
        if version not in INTEROP_VERSIONS:
            return self._problem(
                400,
                f"Upload-Draft-Interop-Version {version!r} not supported: "
                f"{', '.join(sorted(INTEROP_VERSIONS))}",
            )
        return None

    def _limits(self) -> str:
        return f"max-size={self.route.max_size}"

    def options(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        return Response(status_code=204, headers={"Upload-Limit": self._limits()})

    async def create(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        try:
            complete = _boolean(request, "upload-complete")
            total = decimal_header(request, "upload-length")
            length = decimal_header(request, "content-length")
            metadata = parse_metadata(request.headers.get("upload-metadata", ""))
        except BadHeader as exc:
            return self._problem(400, str(exc))
        if complete is None:
            return self._problem(400, "Upload-Complete required")
        if total is None and complete and length is not None:
            total = length
        has_body = length != 0 and (length is not None or "transfer-encoding" in request.headers)
        if total is None and complete:
            return self._problem(400, "a complete upload needs Upload-Length or Content-Length")
        if total is None and has_body and length is None:
            return self._problem(411, "Content-Length required while the length is unknown")
        if complete and length is not None and length != total:
            return self._problem(
                400,
                f"a complete upload of {total} bytes with a body of {length}",
                problem_type=INCONSISTENT_LENGTH,
            )
        if total is not None and length is not None and length > total:
            return self._problem(413, f"a body of {length} bytes for an upload of {total}")
        if total is not None and total > self.route.max_size:
            return self._problem(413, f"upload of {total} bytes, at most {self.route.max_size}")
        # No length yet (more is coming): the length is deferred until a request completes.
        if not has_body and total != 0:
            created = await create(self.context, self.route, request, total, metadata)
            if isinstance(created, Refused):
                return self._refused(created)
            headers = self._created(request, created)
            headers.update({"Upload-Offset": "0", "Upload-Complete": "?0"})
            return Response(status_code=201, headers=headers)
        # With its bytes: created with its first window granted at once.
        made = await create_with_body(
            self.context,
            self.route,
            request,
            total,
            metadata,
            at_most=length if total is None else None,
        )
        if isinstance(made, Refused):
            return self._refused(made)
        created, appended = made
        return self._after_append(appended, complete, self._created(request, created), 201)

    def _created(self, request: Request, created: StreamStatus) -> dict[str, str]:
        return {"Location": self._location(request, created.key), "Upload-Limit": self._limits()}

    async def head(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        found = await self._find(request)
        if not isinstance(found, StreamStatus):
            return found
        return Response(
            status_code=204,
            headers={
                "Upload-Offset": str(found.offset),
                "Upload-Complete": _sf(found.complete),
                **({} if found.length_deferred else {"Upload-Length": str(found.total)}),
                "Upload-Limit": self._limits(),
                "Cache-Control": "no-store",
            },
        )

    async def patch(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        content_type = request.headers.get("content-type")
        if content_type is not None and content_type.split(";")[0].strip() != PARTIAL_UPLOAD:
            return self._problem(415, f"appending takes Content-Type: {PARTIAL_UPLOAD}")
        try:
            complete = _boolean(request, "upload-complete")
            offset = decimal_header(request, "upload-offset")
            length = decimal_header(request, "content-length")
        except BadHeader as exc:
            return self._problem(400, str(exc))
        if complete is None or offset is None:
            return self._problem(400, "Upload-Complete and Upload-Offset required")
        found = await self._find(request)
        if not isinstance(found, StreamStatus):
            return found
        if found.complete:
            return self._problem(400, "the upload is complete", problem_type=COMPLETED_UPLOAD)
        said = offset + length if complete and length is not None else None
        deferred = await self._deferred_length(request, found, said, length)
        if isinstance(deferred, Response):
            return deferred
        found, at_most = deferred
        if length is not None and (
            offset + length > found.total or (complete and offset + length != found.total)
        ):
            return self._problem(
                400,
                f"{length} bytes from offset {offset} do not end an upload of {found.total}"
                if complete
                else f"{length} bytes from offset {offset} pass the upload's length",
                problem_type=INCONSISTENT_LENGTH,
            )
        # The engine decides whether the offset is right: an older request that still
        # holds the upload is stopped first, and its bytes counted.
        appended = await append(
            self.context, self.route, request, found.key, found.total, offset, at_most=at_most
        )
        if isinstance(appended, Refused) and appended.status == Status.CONFLICT:
            now = await lookup(self.context, self.route, found.key, request)
            if isinstance(now, StreamStatus):
                return self._mismatch(now.offset, offset)
        return self._after_append(appended, complete, {}, 204)

    # ---- shared ------------------------------------------------------------------------
    def _mismatch(self, expected: int, provided: int) -> Response:
        response = self._problem(
            409,
            f"the upload's offset is {expected}, not {provided}",
            {"Upload-Offset": str(expected)},
            MISMATCHING_OFFSET,
        )
        return response

    def _after_append(
        self,
        appended: Appended | Refused,
        complete: bool,
        headers: dict[str, str],
        success: int,
    ) -> Response:
        if isinstance(appended, Refused):
            return self._refused(appended, headers)
        self._appended_headers(appended, headers)
        headers["Upload-Complete"] = _sf(appended.complete)
        if appended.status != Status.OK:
            return self._problem(http_status(appended.status), appended.message or "", headers)
        if complete and not appended.complete and appended.body_read:
            return self._problem(
                400,
                f"the body ended at {appended.offset} of {appended.total} bytes",
                headers,
                INCONSISTENT_LENGTH,
            )
        return Response(status_code=success, headers=headers)
