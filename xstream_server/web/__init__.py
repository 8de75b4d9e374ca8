"""The upload page and the JavaScript client, served on the HTTP port.

``static/`` holds plain files, no build step: ``index.html``, ``page.css``, ``page.js`` (the
page), ``xstream.js`` (the client, an ES module any page may import from ``/web/``) and
``sha256-worker.js`` (where the client hashes what it sends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "web_routes"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"


async def _page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def web_routes(page: bool = True) -> list[BaseRoute]:
    """``/web/*`` (the client and the page's files) always, the page at ``/`` if ``page``."""
    routes: list[BaseRoute] = [Mount("/web", StaticFiles(directory=STATIC_DIR), name="web")]
    if page:
        routes.insert(0, Route("/", _page, methods=["GET", "HEAD"]))
    return routes
