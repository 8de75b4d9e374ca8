"""The page and the client as the server serves them: the page at ``/`` unless turned off,
``/web/xstream.js`` always, as JavaScript (a module script needs the right type)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ServerFactory


@pytest.mark.parametrize("page", [True, False], ids=["page", "no-page"])
async def test_the_page_and_the_client_are_served(make_server: ServerFactory, page: bool) -> None:
    async with (
        make_server(http_page=page) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as client,
    ):
        index = await client.get("/")
        if page:
            assert index.status_code == 200
            assert index.headers["content-type"].startswith("text/html")
            assert '<script type="module" src="/web/page.js">' in index.text
        else:
            assert index.status_code == 404
        for name in ("xstream.js", "page.js"):
            script = await client.get(f"/web/{name}")
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]
        assert (await client.get("/web/page.css")).headers["content-type"].startswith("text/css")
        assert (await client.get("/web/../__init__.py")).status_code == 404
        # The other faces are still there.
        status = await client.post("/stream-status", json={"key": "nope"})
        assert status.status_code == 410
