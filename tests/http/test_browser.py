"""A browser on another origin: headless Chromium loads a page from a second server (its own
origin) that uploads with tus-js-client's browser build into the xstream server, through
CORS. The page reports back to its own server; the test awaits that report."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from xstream_server.server import Server
from xstream_server.transport.http import HttpTransportServer

BUNDLE = Path(__file__).resolve().parent.parent / "js" / "node_modules" / "tus-js-client"
SIZE = 1024 * 1024 + 123

PAGE = """<!doctype html>
<script src="/tus.min.js"></script>
<script>
const bytes = new Uint8Array(SIZE);
for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
const report = (body) => fetch("/result", {method: "POST", body: JSON.stringify(body)});
const upload = new tus.Upload(new Blob([bytes]), {
  endpoint: "ENDPOINT",
  chunkSize: 256 * 1024,
  metadata: {name: "from-a-browser.bin"},
  onError: (error) => report({error: String(error)}),
  onSuccess: () => report({url: upload.url}),
});
upload.start();
</script>
"""

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is not installed"
)


@needs_chromium
async def test_upload_from_a_page_on_another_origin(server: Server, tmp_path: Path) -> None:
    reported: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
    endpoint = f"http://127.0.0.1:{server.http_port}/upload-file"

    async def page(request: Request) -> HTMLResponse:
        html = PAGE.replace("SIZE", str(SIZE)).replace("ENDPOINT", endpoint)
        return HTMLResponse(html)

    async def result(request: Request) -> Response:
        if not reported.done():
            reported.set_result(json.loads(await request.body()))
        return Response(status_code=204)

    async def bundle(request: Request) -> FileResponse:
        return FileResponse(BUNDLE / "dist" / "tus.min.js")

    site = Starlette(
        routes=[
            Route("/", page),
            Route("/result", result, methods=["POST"]),
            Route("/tus.min.js", bundle),
        ]
    )
    web = HttpTransportServer(site, 2.0)
    _, port = await web.start("127.0.0.1", 0)
    browser = await asyncio.create_subprocess_exec(
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        outcome = await asyncio.wait_for(reported, 60)
    finally:
        browser.kill()
        await browser.wait()
        await web.close()
    assert "url" in outcome, outcome
    key = outcome["url"].rsplit("/", 1)[1]
    assert server.engine is not None
    stored = server.engine.storage.finished_path(key).read_bytes()
    assert stored == bytes(i % 251 for i in range(SIZE))
