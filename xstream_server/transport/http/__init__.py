"""The HTTP face of an ``App`` on Starlette: tus 1.0 on every stream route, ``POST`` for
request routes, CORS and problem+json errors. ``app`` builds the application, ``tus`` and
``requests`` are its endpoints, ``uploads`` the operations they share over the engine,
``body`` pours request bodies into windows, ``server`` runs it with uvicorn."""

from .app import EXPOSED_HEADERS, build_http_app
from .body import OpenWindows
from .context import HttpContext
from .server import HttpTransportServer
from .tus import TUS_EXTENSIONS, TUS_VERSION

__all__ = [
    "EXPOSED_HEADERS",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "HttpContext",
    "HttpTransportServer",
    "OpenWindows",
    "build_http_app",
]
