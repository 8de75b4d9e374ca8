"""The default application ``xstream-server`` serves when no other is named.

* ``/echo``: a request route that answers with the JSON payload it received.
* ``/upload-file``: a byte-stream route. Each window is granted no more than
  ``XSTREAM_UPLOAD_WINDOW`` bytes (unlimited when unset; anything but a positive number
  stops ``xstream-server`` at start); the server itself never grants
  more than the free space it has not promised to other windows, less its reserve
  (``XSTREAM_STORAGE_RESERVE``), and refuses with 507 when nothing is left. The finished
  file stays under the data directory, named by its key; the client's ``name`` header is
  only reported. A pull (``x-stream-pull: O:B``) with ``x-stream-key: K`` downloads the
  completed upload ``K`` (``xstream get K``); 404 while it is incomplete.

Identities: ``/upload-file`` checks bearer tokens (``xstream token @alice``) with the
server's secret. Without a token a request is anonymous, as before, unless
``XSTREAM_AUTH_REQUIRED`` is on (then 401); a token that is invalid or expired is 401
either way. A stream uploaded with a token belongs to its principal: only that principal
may resume it, ask about it or download it (403 for others); an anonymous one is anyone's
who holds its key.

Files between people (``xstream_server.social``, PROTOCOL §7, §8): ``/presence/*``,
``/monitor``, ``/monitor/ack``, ``/send`` with ``/send/accept``, ``/send/deny``,
``/send/done``, ``/send/refuse``; each needs a token.
"""

from __future__ import annotations

import os
from typing import Any

from xstream_server import (
    App,
    CompletedUpload,
    ConfigurationError,
    DataFormat,
    PullContext,
    Reply,
    RequestContext,
    RouteError,
    Status,
    StreamContent,
    StreamOffer,
    TokenAuth,
)
from xstream_server.social import install

__all__ = ["app"]

MiB = 1024 * 1024

app = App()
# The server's secret; a token is required only when XSTREAM_AUTH_REQUIRED is on.
auth = TokenAuth(required=None)


@app.request("/echo")
async def echo(request: RequestContext) -> Reply:
    if request.data_format != "json":
        raise RouteError(Status.BAD_REQUEST, "/echo takes data-format: json")
    # The server has already checked that the payload is JSON: send it back as it came.
    return Reply(request.payload, DataFormat.JSON)


def _window() -> int | None:
    """``XSTREAM_UPLOAD_WINDOW``: a positive number of bytes; unset or empty for no limit."""
    value = os.environ.get("XSTREAM_UPLOAD_WINDOW", "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigurationError(
            f"XSTREAM_UPLOAD_WINDOW must be a positive number of bytes, not {value!r}"
            " (unset it for no limit)"
        )
    return number


# Checked once at import, so that xstream-server refuses a bad value at start; read again
# for each stream, so that a test may change it.
_window()


async def _grant(offer: StreamOffer) -> int | None:
    # offer.free_space is what the server can still promise; it has clamped the window to it.
    return _window()


async def _completed_upload(pull: PullContext) -> StreamContent:
    if pull.key is None:
        raise RouteError(Status.NOT_FOUND, "x-stream-key names the upload to download")
    # Only the upload's principal may pull it (anyone, for an anonymous upload).
    return StreamContent(pull.key, route="/upload-file")


@app.stream(
    "/upload-file",
    accept=_grant,
    auth=auth,
    content=_completed_upload,
    min_buffer=64 * 1024,
    max_buffer=MiB,
)
async def upload_file(upload: CompletedUpload) -> dict[str, Any]:
    return {
        "key": upload.key,
        "size": upload.size,
        "sha256": upload.sha256,
        "name": upload.metadata.get("name"),
    }


# Presence, monitors and send-to-user: a token is always required.
people = install(app, TokenAuth(required=True))
