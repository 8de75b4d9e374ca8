"""The fleet tests' app: its completion handler says which process ran it."""

from __future__ import annotations

import os
from typing import Any

from xstream_server.app import App, CompletedUpload

app = App()


@app.stream("/upload-file", min_buffer=4096, max_buffer=64 * 1024)
async def upload_file(upload: CompletedUpload) -> dict[str, Any]:
    return {"pid": os.getpid(), "size": upload.size, "sha256": upload.sha256}
