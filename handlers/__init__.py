"""The default application ``xstream-server`` serves when no other is named.

* ``/echo``: a request route that answers with the JSON payload it received.
* ``/upload-file``: a byte-stream route. Each window is granted no more than the free space
  of the storage minus a reserve (``XSTREAM_STORAGE_RESERVE`` bytes, 64 MiB by default) and
  no more than ``XSTREAM_UPLOAD_WINDOW`` bytes (unlimited when unset); with nothing to
  grant it refuses with 507. The finished file stays
  under the data directory, named by its key; the client's ``name`` header is only reported.
"""

from __future__ import annotations

import os
from typing import Any

from xstream_server import (
    App,
    CompletedUpload,
    DataFormat,
    Reply,
    RequestContext,
    RouteError,
    Status,
    StreamOffer,
)

__all__ = ["app"]

MiB = 1024 * 1024

app = App()


@app.request("/echo")
async def echo(request: RequestContext) -> Reply:
    if request.data_format != "json":
        raise RouteError(Status.BAD_REQUEST, "/echo takes data-format: json")
    # The server has already checked that the payload is JSON: send it back as it came.
    return Reply(request.payload, DataFormat.JSON)


def _positive_env(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if not value:
        return default
    number = int(value)
    if number < 0:
        raise ValueError(f"{name} must be a number of bytes")
    return number


async def _grant(offer: StreamOffer) -> int:
    # Free space that is never granted, so the server keeps room for its own files.
    reserve = _positive_env("XSTREAM_STORAGE_RESERVE", 64 * MiB) or 0
    room = offer.free_space - reserve
    if room < 1:
        raise RouteError(Status.INSUFFICIENT_STORAGE, "no free space for this upload now")
    window = _positive_env("XSTREAM_UPLOAD_WINDOW", None)
    return room if not window else min(room, window)


@app.stream("/upload-file", accept=_grant, min_buffer=64 * 1024, max_buffer=MiB)
async def upload_file(upload: CompletedUpload) -> dict[str, Any]:
    return {
        "key": upload.key,
        "size": upload.size,
        "sha256": upload.sha256,
        "name": upload.metadata.get("name"),
    }
