"""The README's "Build an app" example, run as written: a non-PNG upload is refused by the
accept hook before its first byte; a PNG one is stored and answered by the handler."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.conftest import ServerFactory
from tests.wire import Wire, status
from xstream_server import App

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_app() -> App:
    text = README.read_text()
    section = text[text.index("## Build an app") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(README), "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, App)
    return app


async def test_the_readme_example_refuses_non_png_before_the_bytes(
    make_server: ServerFactory,
) -> None:
    body = b"\x89PNG\r\n\x1a\n" + b"\0" * 1000
    stream = {"route": "/avatars", "x-stream": f"{len(body)}:4096"}
    async with make_server(app=readme_app()) as server, await Wire.connect(server.port) as wire:
        refused = await wire.request({**stream, "content-type": "image/jpeg"})
        assert (status(refused), refused.headers["message"]) == (400, "PNG only")
        assert refused.headers["x-stream"] == "-1"
        refused = await wire.request(stream)  # no content-type at all
        assert status(refused) == 400
        accept = await wire.request({**stream, "content-type": "image/png"})
        assert status(accept) == 0
        await wire.send_raw(body)
        done = await wire.receive()
        assert status(done) == 0, done.headers
        assert b'"bytes":1008' in done.payload
