"""tus 1.0 on every stream route ``R``: ``/R`` takes creations (POST) and answers discovery
(OPTIONS); ``/R/<key>`` is the upload: HEAD for its offset, PATCH to append, DELETE to
terminate. Everything stream-related is the engine's; this module reads and writes headers.

Extensions: creation, creation-with-upload, creation-defer-length, expiration,
termination, concatenation and concatenation-unfinished (a final upload made of partial
uploads, complete or not: it completes when the last of them does), checksum (sha1 and sha256: a
PATCH's bytes count only once its ``Upload-Checksum`` is verified, else 460 and the
offset does not move), and checksum-trailer (the same, with ``Upload-Checksum`` as a
trailer field of a chunked body) when the server collects trailers (see ``trailers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ...engine import Refused, StreamStatus
from ...protocol import Status
from .checksums import CHECKSUMS, checksum_of
from .context import KEY
from .endpoint import UploadEndpoint
from .errors import http_status, problem
from .headers import BadHeader, decimal_header, encode_metadata, http_date, parse_metadata
from .trailers import trailers_of
from .uploads import Appended, append, concatenate, create, create_with_body

__all__ = [
    "OFFSET_CONTENT_TYPE",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "TusEndpoint",
]

TUS_VERSION: Final = "1.0.0"
TUS_EXTENSIONS: Final = (
    "creation",
    "creation-with-upload",
    "expiration",
    "termination",
    "checksum",
    "creation-defer-length",
    "concatenation",
    "concatenation-unfinished",
)
# Listed only when the server collects request trailers (the xstream server does).
TRAILER_EXTENSION: Final = "checksum-trailer"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"


class TusEndpoint(UploadEndpoint):
    """The tus face of one stream route."""

    # ---- responses ---------------------------------------------------------------------
    def _base_headers(self) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION}

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self._base_headers(), **(extra or {})}

    def _problem(
        self, status: int, message: str, extra: Mapping[str, str] | None = None
    ) -> Response:
        return problem(status, message, self._headers(extra))

    def _version_problem(self, request: Request) -> Response | None:
        if request.headers.get("tus-resumable") != TUS_VERSION:
            return self._problem(
                412, f"Tus-Resumable {TUS_VERSION} required", {"Tus-Version": TUS_VERSION}
            )
        return None

    # ---- /R ----------------------------------------------------------------------------
    def options(self, request: Request) -> Response:
        """Discovery; like every OPTIONS response it carries no Tus-Resumable."""
        extensions = list(TUS_EXTENSIONS)
        if trailers_of(request.scope) is not None:
            extensions.append(TRAILER_EXTENSION)
        return Response(
            status_code=204,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(extensions),
                "Tus-Max-Size": str(self.route.max_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            },
        )

    async def create(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        concat = request.headers.get("upload-concat", "").strip()
        if concat.startswith("final;"):
            return await self._create_final(request, concat.removeprefix("final;"))
        if concat not in ("", "partial"):
            return self._problem(400, "Upload-Concat must be partial or final;<uploads>")
        try:
            total = decimal_header(request, "upload-length")
            metadata = parse_metadata(request.headers.get("upload-metadata", ""))
            length = decimal_header(request, "content-length")
            check, body_end = checksum_of(request)
        except BadHeader as exc:
            return self._problem(400, str(exc))
        deferred = request.headers.get("upload-defer-length")
        if deferred is not None and (deferred.strip() != "1" or total is not None):
            return self._problem(400, "Upload-Defer-Length: 1, and then no Upload-Length")
        if total is None and deferred is None:
            return self._problem(400, "Upload-Length or Upload-Defer-Length required")
        if total is not None and total > self.route.max_size:
            return self._problem(413, f"upload of {total} bytes, at most {self.route.max_size}")
        with_body = request.headers.get("content-type") == OFFSET_CONTENT_TYPE
        if not with_body and length:
            return self._problem(415, f"a body needs Content-Type: {OFFSET_CONTENT_TYPE}")
        if with_body and length is not None and total is not None and length > total:
            return self._problem(413, f"a body of {length} bytes for an upload of {total}")
        if with_body and total is None and length is None:
            return self._problem(411, "a body for an upload of deferred length needs its length")
        if not with_body and total != 0:
            created = await create(
                self.context, self.route, request, total, metadata, partial=concat == "partial"
            )
            if isinstance(created, Refused):
                return self._refused(created)
            return Response(status_code=201, headers=self._headers(self._created(request, created)))
        # With its bytes, or empty: an upload of no bytes is complete (its handler runs) now,
        # as no client sends a PATCH for it. Created with its first window granted at once.
        made = await create_with_body(
            self.context,
            self.route,
            request,
            total,
            metadata,
            partial=concat == "partial",
            check=check,
            at_most=length if total is None else None,
            body_end=body_end,
        )
        if isinstance(made, Refused):
            return self._refused(made)
        created, appended = made
        return self._after_append(appended, 201, self._created(request, created))

    def _created(self, request: Request, created: StreamStatus) -> dict[str, str]:
        headers = {"Location": self._location(request, created.key)}
        if created.expires is not None:
            headers["Upload-Expires"] = http_date(created.expires)
        return headers

    async def _create_final(self, request: Request, uploads: str) -> Response:
        """A final upload (concatenation): the partial ones it is made of, in order, as
        URLs or paths of this route's uploads."""
        if "upload-length" in request.headers:
            return self._problem(400, "a final upload takes no Upload-Length")
        prefix = self._location(request, "")
        keys = []
        for url in uploads.split():
            path = urlsplit(url).path
            key = path.removeprefix(prefix)
            if not path.startswith(prefix) or not KEY.fullmatch(key):
                return self._problem(400, f"{url} is not an upload of {self.route.path}")
            keys.append(key)
        try:
            metadata = parse_metadata(request.headers.get("upload-metadata", ""))
        except BadHeader as exc:
            return self._problem(400, str(exc))
        made = await concatenate(self.context, self.route, request, keys, metadata)
        if isinstance(made, Refused):
            return self._refused(made)
        final, completion = made
        headers = {"Location": self._location(request, final.key)}
        if completion is None:  # parts still unfinished: it completes when they are
            return Response(status_code=201, headers=self._headers(headers))
        for name, value in completion.headers.items():
            if name.startswith("x-stream-"):
                headers[name] = str(value)
        if completion.status != Status.OK:
            return self._problem(http_status(completion.status), completion.message or "", headers)
        return Response(status_code=201, headers=self._headers(headers))

    # ---- /R/<key> ----------------------------------------------------------------------
    async def head(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        found = await self._find(request)
        if not isinstance(found, StreamStatus):
            return found
        headers = {"Cache-Control": "no-store"}
        # A final upload has no offset before its parts are concatenated (tus
        # concatenation-unfinished): the client has nothing to resume.
        if found.concat is None or found.complete:
            headers["Upload-Offset"] = str(found.offset)
        if found.length_deferred:
            if found.concat is None:
                headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(found.total)
        if found.partial:
            headers["Upload-Concat"] = "partial"
        elif found.concat is not None:
            parts = " ".join(self._location(request, key) for key in found.concat)
            headers["Upload-Concat"] = f"final;{parts}"
        if found.metadata:
            headers["Upload-Metadata"] = encode_metadata(found.metadata)
        if found.expires is not None:
            headers["Upload-Expires"] = http_date(found.expires)
        return Response(status_code=200, headers=self._headers(headers))

    async def patch(self, request: Request) -> Response:
        if (wrong := self._version_problem(request)) is not None:
            return wrong
        if request.headers.get("content-type") != OFFSET_CONTENT_TYPE:
            return self._problem(415, f"PATCH takes Content-Type: {OFFSET_CONTENT_TYPE}")
        try:
            offset = decimal_header(request, "upload-offset")
            length = decimal_header(request, "content-length")
            check, body_end = checksum_of(request)
            total = decimal_header(request, "upload-length")
        except BadHeader as exc:
            return self._problem(400, str(exc))
        if offset is None:
            return self._problem(400, "Upload-Offset required")
        found = await self._find(request)
        if not isinstance(found, StreamStatus):
            return found
        if found.concat is not None:
            return self._problem(403, "a final upload is made of its parts: no PATCH")
        deferred = await self._deferred_length(request, found, total, length)
        if isinstance(deferred, Response):
            return deferred
        found, at_most = deferred
        if length is not None and offset + length > found.total:
            return self._problem(
                413, f"{length} bytes from offset {offset} pass the upload's length {found.total}"
            )
        appended = await append(
            self.context,
            self.route,
            request,
            found.key,
            found.total,
            offset,
            check,
            at_most,
            body_end,
        )
        return self._after_append(appended, 204, {})

    # ---- shared ------------------------------------------------------------------------
    def _after_append(
        self, appended: Appended | Refused, success: int, headers: dict[str, str]
    ) -> Response:
        if isinstance(appended, Refused):  # a creation's Location goes with it
            return self._refused(appended, headers)
        self._appended_headers(appended, headers)
        if appended.expires is not None and not appended.complete:
            headers["Upload-Expires"] = http_date(appended.expires)
        if appended.status != Status.OK:
            return self._problem(http_status(appended.status), appended.message or "", headers)
        return Response(status_code=success, headers=self._headers(headers))
