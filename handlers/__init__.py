"""The default application ``xstream-server`` serves when no other is named.

* ``/echo``: a request route that answers with the JSON payload it received.
* ``/upload-file``: a byte-stream route. Each window is granted no more than
  ``XSTREAM_UPLOAD_WINDOW`` bytes (unlimited when unset); the server itself never grants
  more than the free space it has not promised to other windows, less its reserve
  (``XSTREAM_STORAGE_RESERVE``), and refuses with 507 when nothing is left. The finished
  file stays under the data directory, named by its key; the client's ``name`` header is
  only reported.
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


async def _grant(offer: StreamOffer) -> int | None:
    # offer.free_space is what the server can still promise; it has clamped the window to it.
    return _positive_env("XSTREAM_UPLOAD_WINDOW", None) or None


@app.stream("/upload-file", accept=_grant, min_buffer=64 * 1024, max_buffer=MiB)
async def upload_file(upload: CompletedUpload) -> dict[str, Any]:
    return {
        "key": upload.key,
        "size": upload.size,
        "sha256": upload.sha256,
        "name": upload.metadata.get("name"),
    }
