"""The metrics tests' app: uploads that complete (saying which process ran the handler),
uploads whose handler refuses them, and a bearer token that must never reach /metrics."""

from __future__ import annotations

import os
from typing import Any, Final

from xstream_server.app import App, CompletedUpload, RouteError
from xstream_server.protocol import Status

TOKEN: Final = "metrics-test-token-4f1d9c2b7e"
PRINCIPAL: Final = "principal-alice-3a8e"
MAX_SIZE: Final = 1024 * 1024

app = App()


async def bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    if authorization != f"Bearer {TOKEN}":
        raise RouteError(Status.UNAUTHORIZED, "unknown token")
    return PRINCIPAL


@app.stream("/upload-file", min_buffer=4096, max_buffer=64 * 1024, max_size=MAX_SIZE, auth=bearer)
async def upload_file(upload: CompletedUpload) -> dict[str, Any]:
    return {"pid": os.getpid(), "size": upload.size, "sha256": upload.sha256}


@app.stream("/refuse", min_buffer=4096, max_buffer=64 * 1024, max_size=MAX_SIZE)
async def refuse(upload: CompletedUpload) -> None:
    raise RouteError(Status.BAD_REQUEST, "not wanted here")
