"""An app whose completion handler moves the finished file away, as an app would, then
(on its first run) announces it by creating ``ready`` and blocks, so that a test can kill
the server inside the handler. A later run finds the file already moved and succeeds:
an idempotent handler, as ``CompletedUpload`` asks. ``XSTREAM_TEST_DIR`` is where the
files go."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from xstream_server import App, CompletedUpload

MiB = 1024 * 1024

app = App()


@app.stream("/upload-file", max_window=MiB, min_buffer=64 * 1024)
async def move_away(upload: CompletedUpload) -> Any:
    folder = Path(os.environ["XSTREAM_TEST_DIR"])
    target = folder / upload.key
    if not target.exists():
        os.replace(upload.path, target)
        (folder / "ready").touch()
        await asyncio.Event().wait()  # the test kills the server here
    return {"moved": upload.key, "attempt": upload.attempt}
